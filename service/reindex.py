"""The re-index path: one request type, one validation, one build-and-publish.

``POST /admin/reindex``, ``mmsearch index`` and the RQ worker all describe the
work as a :class:`ReindexRequest`, check it with :func:`check_request` (the same
messages everywhere) and run it with :func:`reindex`. On its way to a worker
the request travels as its own JSON (:meth:`ReindexRequest.to_json`), never as
loose arguments.

``requested_at`` is stamped when the request is made (the API call, the CLI
run) and kept across retries: publishing is ordered by it, so a re-index that
was asked for earlier never replaces the snapshot of one asked for later, in
whatever order they finish (``index.build.SupersededError``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from index.autotune import AUTO, TuningPolicy, check_factory
from index.backends import FAISS, check_backend_factory
from index.build import ProgressCallback, build_snapshot
from index.chunks import Chunk, encode_chunk, merge_chunks, plan_chunks
from index.manifest import Manifest
from index.prototypes import PrototypeOptions
from models.datasets import FORMATS, open_dataset
from models.encoders import Encoder
from service.events import publish_snapshot_event
from service.settings import Settings

logger = logging.getLogger(__name__)

REINDEX_BATCH_SIZE = 32


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ReindexRequest:
    """What to index and how; the same object from the route (or CLI) to the builder."""

    source: Path
    format: str
    factory: str = AUTO
    prototypes: PrototypeOptions = field(default_factory=PrototypeOptions)
    requested_at: datetime = field(default_factory=_utc_now)
    force: bool = False  # publish even when most of the live vectors would go
    # Split into chunk jobs (RQ only): this many, or of this many records; neither:
    # MMSEARCH_REINDEX_CHUNK_SIZE decides (see :func:`plan_request_chunks`).
    chunks: int | None = None
    chunk_size: int | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "source": str(self.source),
                "format": self.format,
                "factory": self.factory,
                "prototypes": self.prototypes.to_dict(),
                "requested_at": self.requested_at.isoformat(),
                "force": self.force,
                "chunks": self.chunks,
                "chunk_size": self.chunk_size,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> ReindexRequest:
        values = json.loads(text)
        return cls(
            source=Path(values["source"]),
            format=values["format"],
            factory=values["factory"],
            prototypes=PrototypeOptions.from_dict(values["prototypes"]),
            requested_at=datetime.fromisoformat(values["requested_at"]),
            force=bool(values.get("force", False)),
            chunks=values.get("chunks"),
            chunk_size=values.get("chunk_size"),
        )


class InvalidReindexError(ValueError):
    """The request cannot run: unknown format, unusable source or factory string."""


def check_request(
    request: ReindexRequest,
    dim: int | None,
    data_roots: Sequence[Path] | None = None,
    backend: str = FAISS,
) -> None:
    """Raise InvalidReindexError for what would make the build fail at once.

    ``dim``: the encoder's dimension, to check the factory string against; None
    (the model not loaded here) leaves that check to the process that builds.
    ``data_roots`` (``MMSEARCH_DATA_ROOTS``): when set, the source must lie inside
    one of them, so an admin token cannot index (and expose) any readable path.
    ``backend`` (``MMSEARCH_INDEX_BACKEND``) refuses the factories it cannot build.
    """
    if request.format not in FORMATS:
        raise InvalidReindexError(
            f"unknown format {request.format!r}; known formats are {sorted(FORMATS)}"
        )
    try:
        exists = request.source.exists()
    except (OSError, ValueError) as exc:  # a name over NAME_MAX, a NUL byte
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidReindexError(f"source is not a usable path: {reason}") from exc
    if not exists:
        raise InvalidReindexError(f"source '{request.source}' does not exist")
    if data_roots and not _inside_any(request.source, data_roots):
        raise InvalidReindexError(
            f"source '{request.source}' is outside the allowed data roots (MMSEARCH_DATA_ROOTS)"
        )
    if dim is not None:
        try:
            check_factory(dim, request.factory)
            check_backend_factory(backend, request.factory)
        except ValueError as exc:
            raise InvalidReindexError(f"factory {request.factory!r}: {exc}") from exc


def _inside_any(source: Path, roots: Sequence[Path]) -> bool:
    resolved = source.resolve()  # symlinks and '..' cannot lead out of a root
    return any(resolved.is_relative_to(root.resolve()) for root in roots)


def _publish_options(request: ReindexRequest, settings: Settings) -> dict[str, Any]:
    """How a re-index's snapshot is built and published, whoever encoded it."""
    return {
        "factory": request.factory,
        "source": str(request.source),
        "fmt": request.format,
        "prototypes": request.prototypes,
        "requested_at": request.requested_at,
        "keep_older": settings.keep_snapshots,
        "min_kept_share": 0.0 if request.force else settings.min_kept_share,
        "tuning": TuningPolicy(settings.flat_max_vectors, settings.target_recall),
        "backend": settings.vector_backend(),
    }


def reindex(
    request: ReindexRequest,
    settings: Settings,
    encoder: Encoder,
    progress: ProgressCallback | None = None,
    *,
    batch_size: int = REINDEX_BATCH_SIZE,
) -> Manifest:
    """Check, build, publish (in request order), prune and announce a snapshot.

    The builder replaces CURRENT only once the snapshot is complete, so a failure
    or a killed process at any point leaves the live index as it was.
    """
    check_request(request, encoder.dim, settings.data_roots, settings.index_backend)
    dataset = open_dataset(request.source, request.format)
    manifest = build_snapshot(
        dataset,
        encoder,
        settings.index_dir,
        batch_size=batch_size,
        total=len(dataset),
        progress=progress,
        max_image_pixels=settings.max_image_pixels,
        **_publish_options(request, settings),
    )
    if settings.redis_url:
        announce_snapshot(settings.redis_url, manifest.version)
    return manifest


# --------------------------------------------------------------------------- chunked


def plan_request_chunks(
    request: ReindexRequest, settings: Settings, batch_size: int = REINDEX_BATCH_SIZE
) -> tuple[int, list[Chunk]]:
    """The source's record count and the chunks a re-index is split into: the
    request's ``chunks`` or ``chunk_size``, else chunks of MMSEARCH_REINDEX_CHUNK_SIZE
    records; one chunk means a single job. A source that cannot be read here is one
    chunk: its job reports why. InvalidReindexError for too many chunks."""
    try:
        total = len(open_dataset(request.source, request.format))
    except (ValueError, OSError) as exc:  # DatasetError, a NUL byte in the path
        logger.info("not splitting the re-index of %s: %s", request.source, exc)
        return 0, [Chunk(0, 0, None)]
    try:
        if request.chunks is not None:
            return total, plan_chunks(total, batch_size, chunks=request.chunks)
        size = request.chunk_size or settings.reindex_chunk_size
        return total, plan_chunks(total, batch_size, chunk_size=size)
    except ValueError as exc:
        raise InvalidReindexError(str(exc)) from exc


def reindex_chunk(
    request: ReindexRequest,
    settings: Settings,
    encoder: Encoder,
    build: str,
    chunk: Chunk,
    progress: ProgressCallback | None = None,
    *,
    batch_size: int = REINDEX_BATCH_SIZE,
) -> int:
    """Encode one chunk of a chunked re-index; returns the records it held."""
    check_request(request, encoder.dim, settings.data_roots, settings.index_backend)
    dataset = open_dataset(request.source, request.format)
    return encode_chunk(
        dataset,
        encoder,
        settings.index_dir,
        build,
        chunk,
        batch_size=batch_size,
        total=len(dataset),
        max_image_pixels=settings.max_image_pixels,
        progress=progress,
    )


def merge_reindex(
    request: ReindexRequest,
    settings: Settings,
    encoder: Encoder,
    build: str,
    n_chunks: int,
    progress: ProgressCallback | None = None,
) -> Manifest:
    """Assemble a chunked re-index's chunks, then publish and announce as :func:`reindex`."""
    manifest = merge_chunks(
        encoder,
        settings.index_dir,
        build,
        n_chunks,
        progress=progress,
        **_publish_options(request, settings),
    )
    if settings.redis_url:
        announce_snapshot(settings.redis_url, manifest.version)
    return manifest


def announce_snapshot(redis_url: str, version: str) -> None:
    """Tell API processes about a new snapshot; they also poll CURRENT, so a
    Redis outage here only delays the swap and must not fail a finished build."""
    try:
        receivers = publish_snapshot_event(redis_url, version)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        logger.warning("snapshot %s published but the event was not sent: %s", version, exc)
        return
    logger.info("snapshot %s published; %d API process(es) notified", version, receivers)
