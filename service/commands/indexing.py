"""``mmsearch index``: build and publish a snapshot synchronously."""

from __future__ import annotations

from pathlib import Path

from index.build import ProgressCallback
from index.manifest import Manifest
from index.prototypes import PrototypeOptions, read_zero_shot_classes
from service.commands import CommandInputError, load_encoder_for
from service.pending import remove_unused_uploads
from service.reindex import InvalidReindexError, ReindexRequest, check_request, reindex
from service.settings import Settings


def index_catalog(
    source: Path,
    fmt: str,
    settings: Settings,
    *,
    factory: str,
    batch_size: int,
    progress: ProgressCallback | None = None,
    prototypes: PrototypeOptions | None = None,
    force: bool = False,
) -> Manifest:
    """The same re-index the jobs run (checks included), with the CLI's batch size."""
    if batch_size < 1:
        raise CommandInputError("--batch-size must be at least 1")
    request = ReindexRequest(source, fmt, factory, prototypes or PrototypeOptions(), force=force)
    try:
        check_request(request, None, settings.data_roots)  # before the model loads
        encoder = load_encoder_for(settings)
        manifest = reindex(request, settings, encoder, progress, batch_size=batch_size)
    except InvalidReindexError as exc:
        raise CommandInputError(str(exc)) from exc
    remove_unused_uploads(settings)
    return manifest


def prototype_options(
    class_field: str | None,
    shots: int | None,
    seed: int,
    text_weight: float,
    zero_shot_file: Path | None,
) -> PrototypeOptions:
    """The prototype table options the index command's flags describe."""
    try:
        extra = read_zero_shot_classes(zero_shot_file) if zero_shot_file is not None else {}
        return PrototypeOptions(class_field, shots, seed, text_weight, extra)
    except (OSError, ValueError) as exc:  # bad options, unreadable file, malformed JSON
        raise CommandInputError(f"prototype options: {exc}") from exc
