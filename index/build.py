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

import errno
import logging
import shutil
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
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
from index.reuse import BatchPlan, ChangeCounts, LiveVectors, live_vectors, plan_batch
from index.snapshot import CATALOG_FILE, INDEX_FILE, VECTORS_FILE
from index.spool import NpySpool
from index.vector_index import VectorIndex
from models.encoders.base import Encoder
from models.images import DEFAULT_MAX_PIXELS, InvalidImageError, load_image
from models.types import CatalogRecord, ProgressCallback

logger = logging.getLogger(__name__)

MAX_TRAINING_VECTORS = 200_000
_COPY_CHUNK_ROWS = 65_536


class BuildError(Exception):
    """The dataset cannot be turned into a snapshot (empty, duplicate ids, ...)."""


class DiskFullError(BuildError):
    """The file system holding the index filled up while the snapshot was written."""


_LOW_SPACE_BYTES = 1 << 20


def _is_disk_full(exc: BaseException, index_dir: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
        return True  # SQLite: "database or disk is full"
    if not isinstance(exc, RuntimeError):
        return False
    # FAISS reports a failed fwrite as a RuntimeError; the errno text is not guaranteed.
    return "No space left" in str(exc) or shutil.disk_usage(index_dir).free < _LOW_SPACE_BYTES


@contextmanager
def _full_disk_reported(index_dir: Path) -> Iterator[None]:
    """A full disk fails the build with a message an admin can act on; nothing is written
    through a memory map (see :mod:`index.spool`), so it is always an exception, never SIGBUS."""
    try:
        yield
    except (OSError, sqlite3.Error, RuntimeError) as exc:
        if not _is_disk_full(exc, index_dir):
            raise
        free_mib = shutil.disk_usage(index_dir).free / (1 << 20)
        raise DiskFullError(
            f"the disk holding the index folder is full ({free_mib:.1f} MiB free while "
            f"writing the new snapshot: {exc}); the live snapshot is untouched: free some "
            "space (or lower MMSEARCH_KEEP_SNAPSHOTS) and re-index again"
        ) from exc


@dataclass
class _EncodedBatch:
    vectors: list[np.ndarray] = field(default_factory=list)
    rows: list[tuple[str, str]] = field(default_factory=list)  # (item_id, kind) per vector
    skipped: int = 0
    plan: BatchPlan = field(default_factory=lambda: BatchPlan({}))


@dataclass
class _BuildCounts:
    records: int = 0
    items: int = 0
    skipped: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    changes: ChangeCounts = field(default_factory=ChangeCounts)
    kept_from_live: int = 0  # items of the new snapshot that the live one had too
    reused_from: str | None = None  # the live snapshot vectors were copied from


# Fills a staging directory's catalog and vectors.npy; returns the counts and the vectors.
CatalogFiller = Callable[[Path], tuple[_BuildCounts, np.ndarray]]


# --------------------------------------------------------------------------- encoding


def _batched(records: Iterable[CatalogRecord], size: int) -> Iterator[list[CatalogRecord]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


def _checked(vectors: np.ndarray, n: int, dim: int, kind: str) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.shape != (n, dim):
        raise BuildError(
            f"encoder returned {array.shape} for {n} {kind} inputs, expected {(n, dim)}"
        )
    if not np.all(np.isfinite(array)):
        raise BuildError(f"encoder returned NaN or infinite {kind} vectors")
    return array


def _load_images(
    batch: Sequence[CatalogRecord], max_pixels: int
) -> tuple[list[str], list[Image.Image], int]:
    ids, images, skipped = [], [], 0
    for record in batch:
        if record.image_path is None:
            continue
        try:
            images.append(load_image(record.image_path, max_pixels=max_pixels))
        except InvalidImageError as exc:
            logger.warning("skipping image of item %s: %s", record.id, exc)
            skipped += 1
            continue
        ids.append(record.id)
    return ids, images, skipped


def _encode_records(
    batch: Sequence[CatalogRecord], encoder: Encoder, max_pixels: int
) -> _EncodedBatch:
    out = _EncodedBatch()
    image_ids, images, out.skipped = _load_images(batch, max_pixels)
    if images:
        try:
            vectors = encoder.encode_images(images)
        finally:
            for image in images:
                image.close()
        out.vectors.append(_checked(vectors, len(images), encoder.dim, "image"))
        out.rows += [(item_id, "image") for item_id in image_ids]
    texts = [(r.id, t) for r in batch for t in r.texts if t.strip()]
    if texts:
        vectors = encoder.encode_texts([t for _, t in texts])
        out.vectors.append(_checked(vectors, len(texts), encoder.dim, "text"))
        out.rows += [(item_id, "text") for item_id, _ in texts]
    recipes = [(r.id, r.recipe) for r in batch if r.recipe is not None]
    if recipes:
        vectors = encoder.encode_recipes([recipe for _, recipe in recipes])
        out.vectors.append(_checked(vectors, len(recipes), encoder.dim, "recipe"))
        out.rows += [(item_id, "recipe") for item_id, _ in recipes]
    return out


_KIND_ORDER = ("image", "text", "recipe")  # the row order _encode_records gives a batch


def _encode_batch(
    batch: Sequence[CatalogRecord],
    encoder: Encoder,
    max_pixels: int,
    live: LiveVectors | None,
) -> _EncodedBatch:
    """Encode the records whose vectors cannot be copied from ``live``; copy the rest."""
    plan = plan_batch(batch, live)
    fresh = _encode_records([r for r in batch if r.id not in plan.reused], encoder, max_pixels)
    fresh.plan = plan
    return _in_full_encode_order(batch, fresh) if plan.reused else fresh


def _in_full_encode_order(batch: Sequence[CatalogRecord], fresh: _EncodedBatch) -> _EncodedBatch:
    """Fresh and copied rows merged in the order encoding the whole batch would give."""
    by_item: dict[tuple[str, str], list[np.ndarray]] = {}
    fresh_vectors = np.concatenate(fresh.vectors) if fresh.vectors else np.empty((0, 0))
    for (item_id, kind), vector in zip(fresh.rows, fresh_vectors, strict=True):
        by_item.setdefault((item_id, kind), []).append(vector)
    for item_id, reused in fresh.plan.reused.items():
        for kind, vector in zip(reused.kinds, reused.vectors, strict=True):
            by_item.setdefault((item_id, kind), []).append(vector)
    out = _EncodedBatch(skipped=fresh.skipped, plan=fresh.plan)
    vectors = []
    for kind in _KIND_ORDER:
        for record in batch:
            for vector in by_item.get((record.id, kind), []):
                vectors.append(vector)
                out.rows.append((record.id, kind))
    out.vectors = [np.stack(vectors)]
    return out


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
    for start in range(0, vectors.shape[0], _COPY_CHUNK_ROWS):
        index.add(np.asarray(vectors[start : start + _COPY_CHUNK_ROWS]))
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
class _BuildOptions:
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
    options: _BuildOptions,
    live: LiveVectors | None,
) -> tuple[_BuildCounts, np.ndarray]:
    counts = _BuildCounts()
    seen: set[str] = set()
    writer = CatalogWriter(staging / CATALOG_FILE)
    spool = NpySpool(staging / VECTORS_FILE, encoder.dim)
    bar = tqdm(total=options.total, unit="item", desc="indexing", file=sys.stderr, disable=None)
    try:
        if options.progress is not None:
            options.progress(0, options.total)
        for batch in _batched(records, options.batch_size):
            _check_unique(batch, seen)
            encoded = _encode_batch(batch, encoder, options.max_image_pixels, live)
            _store_batch(batch, encoded, writer, spool, counts)
            bar.update(len(batch))
            if options.progress is not None:
                options.progress(counts.records, options.total)
        _check_not_empty(counts, spool.n_rows)
        if live is not None:
            counts.changes.items_removed = live.n_items - counts.kept_from_live
            counts.reused_from = live.version if counts.changes.items_reused else None
        writer.finish()
        return counts, spool.finish()
    finally:
        bar.close()
        spool.close()
        writer.abort()


def _check_unique(batch: Sequence[CatalogRecord], seen: set[str]) -> None:
    for record in batch:
        if record.id in seen:
            raise BuildError(f"duplicate item id {record.id!r} in the dataset")
        seen.add(record.id)


def _check_not_empty(counts: _BuildCounts, n_rows: int) -> None:
    if counts.records == 0:
        raise BuildError("the dataset yielded no records; nothing to index")
    if n_rows == 0:
        raise BuildError(
            f"none of the {counts.records} records produced a vector "
            f"({counts.skipped} unreadable images)"
        )


@dataclass
class BatchRows:
    """What a batch adds to the catalog; ``rows`` numbered from the batch's first vector."""

    items: list[tuple[str, str | None, Mapping[str, Any]]] = field(default_factory=list)
    rows: list[tuple[str, str]] = field(default_factory=list)  # (item_id, kind) per vector
    images: list[tuple[str, Path]] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)


def _batch_rows(batch: Sequence[CatalogRecord], encoded: _EncodedBatch) -> BatchRows:
    with_rows = {item_id for item_id, _ in encoded.rows}
    for record in batch:
        if record.id not in with_rows:
            logger.warning("item %s has no readable modality; left out", record.id)
    return BatchRows(
        items=[(r.id, r.label, r.metadata) for r in batch if r.id in with_rows],
        rows=list(encoded.rows),
        images=_indexed_images(batch, encoded),
        hashes=encoded.plan.hashes,
    )


def _count_batch(
    batch: Sequence[CatalogRecord], encoded: _EncodedBatch, n_items: int, counts: _BuildCounts
) -> None:
    counts.records += len(batch)
    counts.items += n_items
    counts.skipped += encoded.skipped
    counts.kinds.update(kind for _, kind in encoded.rows)
    _count_changes(encoded, {item_id for item_id, _ in encoded.rows}, counts)


def write_rows(
    batch: BatchRows, vectors: Iterable[np.ndarray], writer: CatalogWriter, spool: NpySpool
) -> None:
    """Append one batch's catalog rows and vectors (the single build's and the merge's step)."""
    first_row = spool.n_rows
    rows = [(first_row + i, item_id, kind) for i, (item_id, kind) in enumerate(batch.rows)]
    try:
        writer.add_batch(batch.items, rows, batch.images, batch.hashes)
    except ValueError as exc:  # metadata that is not plain JSON, an id seen in another batch
        raise BuildError(str(exc)) from exc
    for block in vectors:
        spool.append(block)


def _store_batch(
    batch: Sequence[CatalogRecord],
    encoded: _EncodedBatch,
    writer: CatalogWriter,
    spool: NpySpool,
    counts: _BuildCounts,
) -> None:
    rows = _batch_rows(batch, encoded)
    write_rows(rows, encoded.vectors, writer, spool)
    _count_batch(batch, encoded, len(rows.items), counts)


def _count_changes(encoded: _EncodedBatch, stored: set[str], counts: _BuildCounts) -> None:
    reused = encoded.plan.reused
    n_reused_rows = sum(len(item.kinds) for item in reused.values())
    changes = counts.changes
    changes.items_reused += len(reused)
    changes.vectors_reused += n_reused_rows
    changes.items_embedded += len(stored) - len(reused)
    changes.vectors_embedded += len(encoded.rows) - n_reused_rows
    counts.kept_from_live += len(stored & encoded.plan.in_live)


def _indexed_images(
    batch: Sequence[CatalogRecord], encoded: _EncodedBatch
) -> list[tuple[str, Path]]:
    """(item id, absolute photo path) of the photos that were read and encoded."""
    with_image = {item_id for item_id, kind in encoded.rows if kind == "image"}
    return [
        (r.id, Path(r.image_path).absolute())
        for r in batch
        if r.image_path is not None and r.id in with_image
    ]


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
    options = _BuildOptions(
        batch_size, total, progress, max_image_pixels, tuning or TuningPolicy(), backend
    )

    def encode_into(staging: Path) -> tuple[_BuildCounts, np.ndarray]:
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
    stamp = _iso(requested_at)
    if publish_snapshot:
        _check_not_superseded(index_dir, stamp)
    policy = tuning or TuningPolicy()
    version = new_version()
    with (
        claim_staging(index_dir, version) as staging,
        _full_disk_reported(index_dir),
        backend.dropped_on_failure(version),
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


def _finish_snapshot(
    staging: Path,
    counts: _BuildCounts,
    vectors: np.ndarray,
    encoder: Encoder,
    options: _BuildOptions,
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
    counts: _BuildCounts,
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


def _iso(moment: datetime | None) -> str | None:
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
