"""``mmsearch index``: build and publish a snapshot synchronously."""

from __future__ import annotations

from pathlib import Path

from index.manifest import Manifest
from index.prototypes import PrototypeOptions, read_zero_shot_classes
from index.vector_index import VectorIndex
from models.datasets import FORMATS
from service.commands import CommandInputError, load_encoder_for
from service.jobs import ProgressCallback, ReindexRequest
from service.settings import Settings
from service.tasks import build_and_publish


def index_catalog(
    source: Path,
    fmt: str,
    settings: Settings,
    *,
    factory: str,
    batch_size: int,
    progress: ProgressCallback | None = None,
    prototypes: PrototypeOptions | None = None,
) -> Manifest:
    """The same build the re-index jobs run, with the CLI's batch size."""
    if fmt not in FORMATS:
        raise CommandInputError(f"unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    if not source.exists():
        raise CommandInputError(f"source {source} does not exist")
    if batch_size < 1:
        raise CommandInputError("--batch-size must be at least 1")
    encoder = load_encoder_for(settings)
    try:
        VectorIndex.create(encoder.dim, factory)
    except ValueError as exc:
        raise CommandInputError(f"--factory {factory!r}: {exc}") from exc
    request = ReindexRequest(source, fmt, factory, prototypes or PrototypeOptions())
    return build_and_publish(request, settings, progress, batch_size=batch_size)


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
