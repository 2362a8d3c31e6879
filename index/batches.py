"""One batch of records into the new snapshot: encode (or copy from the live
snapshot), then append its catalog rows and vectors, and count what happened.

These are the steps the single-process build (:mod:`index.build`), the chunked build
(:mod:`index.chunks`) and item changes (:mod:`index.changes`) share, so all three
give the same rows in the same order for the same records.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from index.build_errors import BuildError
from index.catalog import CatalogWriter
from index.reuse import BatchPlan, ChangeCounts, LiveVectors, plan_batch
from index.spool import NpySpool
from models.encoders.base import Encoder
from models.images import InvalidImageError, load_image
from models.types import CatalogRecord

logger = logging.getLogger(__name__)


@dataclass
class EncodedBatch:
    vectors: list[np.ndarray] = field(default_factory=list)
    rows: list[tuple[str, str]] = field(default_factory=list)  # (item_id, kind) per vector
    skipped: int = 0
    plan: BatchPlan = field(default_factory=lambda: BatchPlan({}))


@dataclass
class BuildCounts:
    records: int = 0
    items: int = 0
    skipped: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    changes: ChangeCounts = field(default_factory=ChangeCounts)
    kept_from_live: int = 0  # items of the new snapshot that the live one had too
    reused_from: str | None = None  # the live snapshot vectors were copied from


def batched(records: Iterable[CatalogRecord], size: int) -> Iterator[list[CatalogRecord]]:
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
) -> EncodedBatch:
    out = EncodedBatch()
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


def encode_batch(
    batch: Sequence[CatalogRecord],
    encoder: Encoder,
    max_pixels: int,
    live: LiveVectors | None,
) -> EncodedBatch:
    """Encode the records whose vectors cannot be copied from ``live``; copy the rest."""
    plan = plan_batch(batch, live)
    fresh = _encode_records([r for r in batch if r.id not in plan.reused], encoder, max_pixels)
    fresh.plan = plan
    return _in_full_encode_order(batch, fresh) if plan.reused else fresh


def _in_full_encode_order(batch: Sequence[CatalogRecord], fresh: EncodedBatch) -> EncodedBatch:
    """Fresh and copied rows merged in the order encoding the whole batch would give."""
    by_item: dict[tuple[str, str], list[np.ndarray]] = {}
    fresh_vectors = np.concatenate(fresh.vectors) if fresh.vectors else np.empty((0, 0))
    for (item_id, kind), vector in zip(fresh.rows, fresh_vectors, strict=True):
        by_item.setdefault((item_id, kind), []).append(vector)
    for item_id, reused in fresh.plan.reused.items():
        for kind, vector in zip(reused.kinds, reused.vectors, strict=True):
            by_item.setdefault((item_id, kind), []).append(vector)
    out = EncodedBatch(skipped=fresh.skipped, plan=fresh.plan)
    vectors = []
    for kind in _KIND_ORDER:
        for record in batch:
            for vector in by_item.get((record.id, kind), []):
                vectors.append(vector)
                out.rows.append((record.id, kind))
    out.vectors = [np.stack(vectors)]
    return out


def check_unique(batch: Sequence[CatalogRecord], seen: set[str]) -> None:
    for record in batch:
        if record.id in seen:
            raise BuildError(f"duplicate item id {record.id!r} in the dataset")
        seen.add(record.id)


def check_not_empty(counts: BuildCounts, n_rows: int) -> None:
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


def batch_rows(batch: Sequence[CatalogRecord], encoded: EncodedBatch) -> BatchRows:
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


def count_batch(
    batch: Sequence[CatalogRecord], encoded: EncodedBatch, n_items: int, counts: BuildCounts
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


def store_batch(
    batch: Sequence[CatalogRecord],
    encoded: EncodedBatch,
    writer: CatalogWriter,
    spool: NpySpool,
    counts: BuildCounts,
) -> None:
    rows = batch_rows(batch, encoded)
    write_rows(rows, encoded.vectors, writer, spool)
    count_batch(batch, encoded, len(rows.items), counts)


def _count_changes(encoded: EncodedBatch, stored: set[str], counts: BuildCounts) -> None:
    reused = encoded.plan.reused
    n_reused_rows = sum(len(item.kinds) for item in reused.values())
    changes = counts.changes
    changes.items_reused += len(reused)
    changes.vectors_reused += n_reused_rows
    changes.items_embedded += len(stored) - len(reused)
    changes.vectors_embedded += len(encoded.rows) - n_reused_rows
    counts.kept_from_live += len(stored & encoded.plan.in_live)


def _indexed_images(
    batch: Sequence[CatalogRecord], encoded: EncodedBatch
) -> list[tuple[str, Path]]:
    """(item id, absolute photo path) of the photos that were read and encoded."""
    with_image = {item_id for item_id, kind in encoded.rows if kind == "image"}
    return [
        (r.id, Path(r.image_path).absolute())
        for r in batch
        if r.image_path is not None and r.id in with_image
    ]
