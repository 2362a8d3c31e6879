"""Batch (re-)index pipeline: records -> vectors + catalog -> FAISS -> published snapshot.

Streaming: records are read, decoded and encoded ``batch_size`` at a time;
vectors are appended to ``vectors.npy`` with plain writes (:mod:`index.spool`)
and catalog rows committed per batch, so memory holds one batch of images at a
time (plus the FAISS index when it is built at the end). Every file goes into
``<index_dir>/.staging-<version>``, which is published atomically only once
complete (see :mod:`index.layout`): a build that fails or is killed never
touches CURRENT or the live snapshot, and a full disk fails it with DiskFullError.

One row per modality: the image (kind ``image``), each non-blank text (kind
``text``) and the recipe (kind ``recipe``). Unreadable images are skipped,
logged and counted in ``Manifest.skipped``; a record left without any row is
not stored.

Incremental: items whose inputs are unchanged since the live snapshot (same
content hash, same model) get their vectors copied from it instead of encoded
(:mod:`index.reuse`); the manifest's ``changes`` counts both. Rows keep the
order a full encode would give them, so an unchanged source yields the same
``vectors.npy``.

Once the catalog and vectors are complete, the class prototype table is built
from them (:mod:`index.prototypes`), so every (re-)index rebuilds it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from index.autotune import (
    AUTO,
    Tuning,
    TuningPolicy,
    check_factory,
    exact_tuning,
    resolve_factory,
    tune,
)
from index.backends import IndexBackend
from index.batches import (
    BuildCounts,
    batched,
    check_not_empty,
    check_unique,
    encode_batch,
    store_batch,
)
from index.build_errors import BuildError, DiskFullError, full_disk_reported
from index.catalog import Catalog, CatalogWriter
from index.layout import (
    STAGING_PREFIX,
    SnapshotError,
    claim_staging,
    clean_stale_staging,
    fsync_dir,
    install,
    new_version,
    publish,
    publish_lock,
    read_current,
)
from index.manifest import Manifest
from index.milvus_index import MILVUS_FACTORY
from index.prototypes import PrototypeOptions, PrototypeTable, build_prototype_table
from index.reuse import LiveVectors, live_vectors
from index.set_build import SetSpool, finish_set_rows
from index.set_reuse import set_encoder_of
from index.snapshot import CATALOG_FILE, INDEX_FILE, VECTORS_FILE
from index.spool import NpySpool
from index.vector_index import VectorIndex, add_rows
from models.encoders.base import Encoder
from models.images import DEFAULT_MAX_PIXELS
from models.types import CatalogRecord, ProgressCallback

logger = logging.getLogger(__name__)

# BuildError and DiskFullError are raised from here as well; callers import them from
# index.build, next to build_snapshot.
__all__ = [
    "BuildError",
    "BuildOptions",
    "CatalogFiller",
    "DiskFullError",
    "ShrinkRefusedError",
    "SupersededError",
    "build_snapshot",
    "build_with",
    "finish_snapshot",
    "iso_utc",
]

MAX_TRAINING_VECTORS = 200_000
_COPY_CHUNK_ROWS = 65_536


# Fills a staging directory's catalog and vectors.npy; returns the counts and the vectors.
CatalogFiller = Callable[[Path], tuple[BuildCounts, np.ndarray]]


# --------------------------------------------------------------------------- staging files


def _training_sample(vectors: np.ndarray) -> np.ndarray:
    n = vectors.shape[0]
    if n <= MAX_TRAINING_VECTORS:
        return np.asarray(vectors)
    chosen = np.random.default_rng(0).choice(n, size=MAX_TRAINING_VECTORS, replace=False)
    return np.asarray(vectors[np.sort(chosen)])


def _write_prototypes(
    staging: Path, vectors: np.ndarray, encoder: Encoder, options: PrototypeOptions
) -> PrototypeTable:
    catalog = Catalog.open(staging / CATALOG_FILE)
    try:
        table = build_prototype_table(catalog, vectors, encoder, options)
    finally:
        catalog.close()
    table.save(staging)
    return table


def _write_index(staging: Path, vectors: np.ndarray, factory: str, policy: TuningPolicy) -> Tuning:
    """Build, tune and save the index of ``vectors``; ``factory`` is already resolved."""
    index = VectorIndex.create(vectors.shape[1], factory)
    if index.needs_training:
        try:
            index.train(_training_sample(vectors))
        except ValueError as exc:
            raise BuildError(str(exc)) from exc
    add_rows(index, vectors, _COPY_CHUNK_ROWS)
    tuning = tune(index, vectors, policy)
    logger.info(
        "index %s: recall@10 %.3f (target %.2f) with efSearch %s, nprobe %s",
        factory,
        tuning.recall_at_10,
        tuning.target_recall,
        tuning.ef_search,
        tuning.nprobe,
    )
    index.save(staging / INDEX_FILE)
    return tuning


# --------------------------------------------------------------------------- pipeline


@dataclass(frozen=True)
class BuildOptions:
    batch_size: int
    total: int | None
    progress: ProgressCallback | None
    max_image_pixels: int
    tuning: TuningPolicy
    backend: IndexBackend | None


def _encode_catalog(
    records: Iterable[CatalogRecord],
    encoder: Encoder,
    staging: Path,
    options: BuildOptions,
    live: LiveVectors | None,
) -> tuple[BuildCounts, np.ndarray]:
    counts = BuildCounts()
    seen: set[str] = set()
    writer = CatalogWriter(staging / CATALOG_FILE)
    spool = NpySpool(staging / VECTORS_FILE, encoder.dim)
    sets = set_encoder_of(encoder)
    live_sets = live.sets if live is not None else None
    set_spool = SetSpool(staging, sets, encoder.dim, live_sets) if sets is not None else None
    bar = tqdm(total=options.total, unit="item", desc="indexing", file=sys.stderr, disable=None)
    try:
        if options.progress is not None:
            options.progress(0, options.total)
        for batch in batched(records, options.batch_size):
            check_unique(batch, seen)
            encoded = encode_batch(batch, encoder, options.max_image_pixels, live)
            store_batch(batch, encoded, writer, spool, counts)
            if set_spool is not None:
                stored = {item_id for item_id, _ in encoded.rows}
                reused = encoded.plan.reused.keys()
                set_spool.add_batch(batch, stored, options.max_image_pixels, reused)
            bar.update(len(batch))
            if options.progress is not None:
                options.progress(counts.records, options.total)
        check_not_empty(counts, spool.n_rows)
        if live is not None:
            counts.changes.items_removed = live.n_items - counts.kept_from_live
            counts.reused_from = live.version if counts.changes.items_reused else None
        writer.finish()
        if set_spool is not None:
            set_spool.finish()
        return counts, spool.finish()
    finally:
        bar.close()
        spool.close()
        if set_spool is not None:
            set_spool.close()
        writer.abort()


def build_snapshot(
    records: Iterable[CatalogRecord],
    encoder: Encoder,
    index_dir: Path,
    *,
    factory: str = AUTO,
    batch_size: int = 32,
    total: int | None = None,
    progress: ProgressCallback | None = None,
    source: str | None = None,
    fmt: str | None = None,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    publish_snapshot: bool = True,
    prototypes: PrototypeOptions | None = None,
    requested_at: datetime | None = None,
    keep_older: int | None = None,
    min_kept_share: float = 0.0,
    tuning: TuningPolicy | None = None,
    backend: IndexBackend | None = None,
) -> Manifest:
    """Encode ``records`` into a new snapshot under ``index_dir``; returns its manifest.

    With ``publish_snapshot`` the snapshot becomes CURRENT, unless the live one
    was requested after ``requested_at`` (SupersededError, checked before and
    after encoding); then versions beyond the live one and ``keep_older`` others
    are pruned (None: none). Without it, the snapshot is installed as
    ``<index_dir>/<version>`` for :func:`index.layout.set_current` later.
    ``prototypes`` says how the class prototype table is made (default: item
    labels, all members). ``factory`` ``auto`` chooses one by catalog size, and
    ``tuning`` sets that choice and the recall the search knobs are tuned to (see
    :mod:`index.autotune`). ``backend`` says where the vectors are searched (default
    FAISS; see :mod:`index.backends`). BuildError for empty datasets, duplicate ids,
    untrainable factories; ValueError for a bad factory string or batch size
    (checked before encoding).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    options = BuildOptions(
        batch_size, total, progress, max_image_pixels, tuning or TuningPolicy(), backend
    )

    def encode_into(staging: Path) -> tuple[BuildCounts, np.ndarray]:
        with live_vectors(Path(index_dir), encoder) as live:
            return _encode_catalog(records, encoder, staging, options, live)

    return build_with(
        encode_into,
        encoder,
        index_dir,
        factory=factory,
        source=source,
        fmt=fmt,
        publish_snapshot=publish_snapshot,
        prototypes=prototypes,
        requested_at=requested_at,
        keep_older=keep_older,
        min_kept_share=min_kept_share,
        tuning=tuning,
        backend=backend,
    )


def build_with(
    fill: CatalogFiller,
    encoder: Encoder,
    index_dir: Path,
    *,
    factory: str = AUTO,
    source: str | None = None,
    fmt: str | None = None,
    publish_snapshot: bool = True,
    prototypes: PrototypeOptions | None = None,
    requested_at: datetime | None = None,
    keep_older: int | None = None,
    min_kept_share: float = 0.0,
    tuning: TuningPolicy | None = None,
    backend: IndexBackend | None = None,
) -> Manifest:
    """:func:`build_snapshot` with its catalog and vectors written by ``fill``: encoding
    records there, assembling the chunks other processes encoded in
    :func:`index.chunks.merge_chunks`. Everything after (prototypes, index, manifest,
    ordered publish, prune) is the same."""
    check_factory(encoder.dim, factory)  # a typo should fail now, not after encoding
    backend = backend or IndexBackend()
    backend.check_factory(factory)
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(index_dir)
    stamp = iso_utc(requested_at)
    if publish_snapshot:
        _check_not_superseded(index_dir, stamp)
    policy = tuning or TuningPolicy()
    version = new_version()
    with (
        claim_staging(index_dir, version) as staging,
        full_disk_reported(index_dir),
        backend.dropped_on_failure(index_dir, version),
    ):
        counts, vectors = fill(staging)
        manifest = _write_snapshot(
            counts, vectors, encoder, staging, policy, backend, factory, prototypes
        )
        manifest = replace(manifest, source=source, format=fmt, requested_at=stamp)
        manifest.write(staging)
        fsync_dir(staging)
        if publish_snapshot:
            _publish_in_order(index_dir, staging, manifest, min_kept_share)
            backend.published(manifest)
        else:
            install(index_dir, staging, manifest.version)
    if publish_snapshot and keep_older is not None:
        with publish_lock(index_dir):
            backend.prune(index_dir, keep_older)
    logger.info(
        "built snapshot %s: %d items, %d vectors, %d skipped; changes %s",
        manifest.version,
        manifest.n_items,
        manifest.n_vectors,
        manifest.skipped,
        manifest.changes,
    )
    return manifest


def finish_snapshot(
    staging: Path,
    counts: BuildCounts,
    vectors: np.ndarray,
    encoder: Encoder,
    options: BuildOptions,
    factory: str,
    prototypes: PrototypeOptions | None,
    live: LiveVectors | None,
    collection: str | None = None,
) -> Manifest:
    """Prototypes and the searchable index of a complete catalog and ``vectors.npy``
    in ``staging`` (also used by :mod:`index.changes`); returns the manifest.
    ``collection``: the vectors are in this Milvus collection already."""
    if counts.reused_from is None and live is not None and counts.changes.items_reused:
        counts = replace(counts, reused_from=live.version)
    backend = options.backend or IndexBackend()
    return _write_snapshot(
        counts, vectors, encoder, staging, options.tuning, backend, factory, prototypes, collection
    )


def _write_snapshot(
    counts: BuildCounts,
    vectors: np.ndarray,
    encoder: Encoder,
    staging: Path,
    policy: TuningPolicy,
    backend: IndexBackend,
    factory: str,
    prototypes: PrototypeOptions | None,
    collection: str | None = None,
) -> Manifest:
    """The rest of the snapshot's files into ``staging``, from its catalog and vectors;
    returns its manifest (not yet written). ``collection``: the Milvus collection that
    holds the vectors already (item changes); None: a new one (Milvus) or index.faiss."""
    prototype_options = prototypes or PrototypeOptions()
    table = _write_prototypes(staging, vectors, encoder, prototype_options)
    version = staging.name.removeprefix(STAGING_PREFIX)
    if (milvus := backend.milvus) is not None:
        factory, tuned = MILVUS_FACTORY, exact_tuning(policy)
        if collection is None:
            collection = milvus.create(version, vectors).collection
    else:
        factory = resolve_factory(factory, int(vectors.shape[0]), encoder.dim, policy)
        tuned = _write_index(staging, vectors, factory, policy)
    # Set rows are FAISS files beside the snapshot on either backend (when spooled).
    finish_set_rows(staging, policy, tuned)
    return Manifest(
        version=version,
        model_fingerprint=encoder.fingerprint,
        dim=encoder.dim,
        factory=factory,
        n_items=counts.items,
        n_vectors=int(vectors.shape[0]),
        kinds=dict(sorted(counts.kinds.items())),
        skipped=counts.skipped,
        n_classes=len(table),
        n_zero_shot_classes=table.n_zero_shot,
        class_field=prototype_options.class_field,
        ef_search=tuned.ef_search,
        nprobe=tuned.nprobe,
        recall_at_10=tuned.recall_at_10,
        target_recall=tuned.target_recall,
        recall_queries=tuned.recall_queries,
        changes=counts.changes.as_dict(),
        reused_from=counts.reused_from,
        backend=backend.name,
        collection=collection,
    )


# --------------------------------------------------------------------------- ordered publish


class SupersededError(BuildError):
    """The live snapshot answers a newer request than this build's: it stays live."""


class ShrinkRefusedError(BuildError):
    """The new snapshot would keep too small a share of the live one's vectors."""


def iso_utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError("requested_at must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _live_request_time(index_dir: Path) -> str | None:
    """When the live snapshot was requested; None: no live one, or it does not say."""
    try:
        live = read_current(index_dir)
        return Manifest.read(index_dir / live).requested_at if live else None
    except SnapshotError as exc:  # a broken live snapshot is replaced, not a reason to stop
        logger.warning("cannot read the live snapshot's manifest: %s", exc)
        return None


def _check_not_superseded(index_dir: Path, requested_at: str | None) -> None:
    live_requested_at = _live_request_time(index_dir)
    # ISO 8601 UTC strings of one format compare like the times they name.
    if (
        requested_at is not None
        and live_requested_at is not None
        and (live_requested_at > requested_at)
    ):
        raise SupersededError(
            f"superseded: the live snapshot {read_current(index_dir)} answers a newer "
            f"re-index (requested {live_requested_at}) than this one ({requested_at})"
        )


def _publish_in_order(
    index_dir: Path, staging: Path, manifest: Manifest, min_kept_share: float = 0.0
) -> None:
    """Make the snapshot CURRENT unless a newer request's snapshot is live already, or
    unless it keeps less than ``min_kept_share`` of the live snapshot's vectors."""
    with publish_lock(index_dir):
        _check_not_superseded(index_dir, manifest.requested_at)
        _check_kept_share(index_dir, manifest, min_kept_share)
        publish(index_dir, staging, manifest.version)


def _check_kept_share(index_dir: Path, manifest: Manifest, min_kept_share: float) -> None:
    """A source whose photos all went missing would replace a full index with a text-only
    one without a word: refuse a snapshot that drops most of the live vectors."""
    if not min_kept_share:
        return
    try:
        live = read_current(index_dir)
        if live is None:
            return
        live_vectors = Manifest.read(index_dir / str(live)).n_vectors
    except SnapshotError:  # an unreadable live snapshot is nothing to protect
        return
    if manifest.n_vectors < min_kept_share * live_vectors:
        raise ShrinkRefusedError(
            f"this re-index would keep {manifest.n_vectors} of the live snapshot's "
            f"{live_vectors} vectors ({manifest.skipped} inputs unreadable), less than the "
            f"{min_kept_share:.0%} MMSEARCH_MIN_KEPT_SHARE allows: check the source "
            "(missing images?), or send it again with force"
        )
