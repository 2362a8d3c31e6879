"""Item-level changes: a new snapshot = the live one + upserted items - deleted ones.

Several pending changes (:class:`ItemChange`, the last one per item id wins) go into
one new snapshot. Its catalog starts as a copy of the live catalog without the
changed and deleted items (done inside SQLite, :meth:`CatalogWriter.copy_from`),
and their vector rows are copied from the live ``vectors.npy``; only the upserted
items are then encoded, through the build's own batch step, so an upsert whose
inputs are unchanged (a metadata edit) copies its vectors too (:mod:`index.reuse`).
The prototypes (with the live table's options) and the FAISS index are rebuilt
from the new vectors by the build's own final step, so a new item moves its
class prototype and a class whose last member goes is gone. Set rows (DivE) follow
when the live ones were made by the encoder's set heads: untouched items' sets are
copied, upserted items' encoded, and the set-means index rebuilt (:mod:`index.set_reuse`);
otherwise the new snapshot has none. On the Milvus backend
no collection is rebuilt: the upserted rows are inserted into the live one and the
replaced ones deleted (:mod:`index.milvus_changes`).

Publishing: appliers hold ``<index_dir>/.changes.lock`` (flock, dropped by the
kernel when a process dies) from reading their pending changes to marking them
applied, so two workers never build from the same live snapshot and lose each
other's changes, nor publish an older set of changes after a newer one. A full
re-index may still publish meanwhile: then CURRENT is no longer the snapshot the
changes were applied to, and they are applied again to the new one
(:class:`LiveMovedError`). The new snapshot is stamped with the latest change's
request time, so a re-index asked for before an item change never replaces the
snapshot holding it (:class:`index.build.SupersededError`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from index.autotune import AUTO, TuningPolicy
from index.backends import IndexBackend
from index.batches import BuildCounts, batched, encode_batch, store_batch
from index.build import BuildOptions, finish_snapshot, iso_utc
from index.build_errors import BuildError, full_disk_reported
from index.catalog import Catalog, CatalogWriter
from index.layout import (
    claim_staging,
    clean_stale_staging,
    exclusive_lock,
    fsync_dir,
    new_version,
    publish,
    publish_lock,
    read_current,
)
from index.manifest import Manifest
from index.milvus_changes import in_place_target
from index.prototypes import PrototypeOptions, PrototypeTable
from index.reuse import LiveVectors, live_vectors
from index.set_build import SetSpool
from index.set_reuse import set_encoder_of
from index.set_search import SET_ROWS_FILE
from index.snapshot import CATALOG_FILE, VECTORS_FILE
from index.spool import NpySpool
from models.encoders.base import Encoder
from models.images import DEFAULT_MAX_PIXELS
from models.types import CatalogRecord, Recipe

logger = logging.getLogger(__name__)

CHANGES_LOCK_FILE = ".changes.lock"
APPLY_ATTEMPTS = 3  # tries when a full re-index publishes while changes are applied
_COPY_ROWS = 65_536


@dataclass(frozen=True)
class ItemChange:
    """One acknowledged change: an item's new inputs and metadata, or its deletion."""

    item_id: str
    record: CatalogRecord | None  # None: delete the item
    requested_at: datetime  # timezone-aware

    def to_json(self) -> str:
        record = None if self.record is None else _record_dict(self.record)
        values = {"item_id": self.item_id, "record": record, "at": self.requested_at.isoformat()}
        return json.dumps(values, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ItemChange:
        values = json.loads(text)
        record = values["record"]
        return cls(
            values["item_id"],
            None if record is None else _record_from_dict(record),
            datetime.fromisoformat(values["at"]),
        )


def _record_dict(record: CatalogRecord) -> dict[str, Any]:
    recipe = record.recipe
    return {
        "id": record.id,
        "label": record.label,
        "metadata": record.metadata,
        "image_path": None if record.image_path is None else str(record.image_path),
        "texts": list(record.texts),
        "recipe": None
        if recipe is None
        else [recipe.title, list(recipe.ingredients), list(recipe.instructions)],
    }


def _record_from_dict(values: dict[str, Any]) -> CatalogRecord:
    recipe = values["recipe"]
    image_path = values["image_path"]
    return CatalogRecord(
        id=values["id"],
        metadata=values["metadata"],
        image_path=None if image_path is None else Path(image_path),
        texts=tuple(values["texts"]),
        recipe=None if recipe is None else Recipe(recipe[0], tuple(recipe[1]), tuple(recipe[2])),
        label=values["label"],
    )


def coalesce(changes: Sequence[ItemChange]) -> tuple[dict[str, CatalogRecord], set[str]]:
    """(upserts by id, deleted ids), the last change of each item winning."""
    last = {change.item_id: change for change in changes}
    upserts = {i: c.record for i, c in last.items() if c.record is not None}
    return upserts, {i for i, c in last.items() if c.record is None}


class ChangesRefusedError(BuildError):
    """The live snapshot cannot take item changes (another model, or no content hashes)."""


class LiveMovedError(BuildError):
    """CURRENT moved to another snapshot while changes were applied to the previous one."""


@dataclass(frozen=True)
class ApplyOptions:
    batch_size: int = 32
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    tuning: TuningPolicy | None = None
    backend: IndexBackend | None = None
    keep_older: int | None = None  # older snapshots kept after publishing; None: all


def changes_lock(index_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Exclusive across processes: one applier of item changes at a time."""
    return exclusive_lock(Path(index_dir) / CHANGES_LOCK_FILE)


def apply_changes(
    index_dir: Path,
    encoder: Encoder,
    changes: Sequence[ItemChange],
    options: ApplyOptions | None = None,
) -> Manifest:
    """Publish one new snapshot with ``changes`` applied to the live one; its manifest.

    Callers hold :func:`changes_lock` from reading the pending changes until they are
    marked applied: an applier that read fewer changes must not publish after one
    that read more.

    ChangesRefusedError when there is no usable live snapshot; BuildError when the
    changes would leave the index empty.
    """
    if not changes:
        raise ValueError("no changes to apply")
    options = options or ApplyOptions()
    index_dir = Path(index_dir)
    for attempt in range(1, APPLY_ATTEMPTS + 1):
        try:
            manifest = _apply_once(index_dir, encoder, changes, options)
            break
        except LiveMovedError:
            if attempt == APPLY_ATTEMPTS:
                raise
            logger.info("the live snapshot moved while applying item changes; again")
    if options.keep_older is not None:
        backend = options.backend or IndexBackend()
        with publish_lock(index_dir):
            backend.prune(index_dir, options.keep_older)
    return manifest


def _apply_once(
    index_dir: Path, encoder: Encoder, changes: Sequence[ItemChange], options: ApplyOptions
) -> Manifest:
    clean_stale_staging(index_dir)
    backend = options.backend or IndexBackend()
    stamp = iso_utc(max(change.requested_at for change in changes))
    build = BuildOptions(
        options.batch_size,
        None,
        None,
        options.max_image_pixels,
        options.tuning or TuningPolicy(),
        backend,
    )
    version = new_version()
    with (
        claim_staging(index_dir, version) as staging,
        full_disk_reported(index_dir),
        live_vectors(index_dir, encoder) as live,
        backend.dropped_on_failure(index_dir, version),
        contextlib.ExitStack() as milvus_rows,
    ):
        base = _usable(live, index_dir)
        counts, vectors, kept_rows = _write_catalog(staging, base, changes, encoder, build)
        base_manifest = base.manifest
        in_place = in_place_target(backend, index_dir / base.version, base_manifest)
        if in_place is not None:  # the upserted rows go into the live collection
            milvus_rows.enter_context(in_place.rows_written(staging, vectors, kept_rows))
        factory = base_manifest.factory if base_manifest.backend == backend.name else AUTO
        prototypes = _prototype_options(index_dir / base.version, base_manifest)
        manifest = finish_snapshot(
            staging,
            counts,
            vectors,
            encoder,
            build,
            factory,
            prototypes,
            base,
            None if in_place is None else in_place.collection,
        )
        manifest = replace(
            manifest,
            source=base_manifest.source,
            format=base_manifest.format,
            requested_at=max(filter(None, (stamp, base_manifest.requested_at))),
            reused_from=base.version,
        )
        manifest.write(staging)
        fsync_dir(staging)
        _publish_on(index_dir, staging, manifest, base.version)
        backend.published(manifest)
    if in_place is not None:
        in_place.retire(index_dir / manifest.version)
    logger.info(
        "applied %d item change(s) to snapshot %s: %s is live with %d items; changes %s",
        len(changes),
        base.version,
        manifest.version,
        manifest.n_items,
        manifest.changes,
    )
    return manifest


def _usable(live: LiveVectors | None, index_dir: Path) -> LiveVectors:
    if live is None:
        raise ChangesRefusedError(
            f"no live snapshot in {index_dir} to apply item changes to: build one first"
        )
    if not live.reusable:
        raise ChangesRefusedError(
            f"the live snapshot {live.version} was built by another model or before content "
            "hashes existed: re-index it before changing items"
        )
    return live


def _prototype_options(path: Path, manifest: Manifest) -> PrototypeOptions:
    """The live table's options, so its zero-shot classes and K carry over."""
    table = PrototypeTable.load(path, manifest.n_vectors, manifest.dim)
    if len(table) == 0 and manifest.class_field is not None:  # a table without options
        return PrototypeOptions(class_field=manifest.class_field)
    return table.options


def _write_catalog(
    staging: Path,
    live: LiveVectors,
    changes: Sequence[ItemChange],
    encoder: Encoder,
    options: BuildOptions,
) -> tuple[BuildCounts, np.ndarray, np.ndarray]:
    """The new catalog and vectors.npy; also the live row of each copied row (the
    first rows; the upserted items' follow)."""
    upserts, deletes = coalesce(changes)
    counts = BuildCounts()
    writer = CatalogWriter(staging / CATALOG_FILE)
    spool = NpySpool(staging / VECTORS_FILE, encoder.dim)
    set_spool = _set_spool(staging, live, encoder)
    try:
        live_catalog = staging.parent / live.version / CATALOG_FILE
        kept_rows = writer.copy_from(live_catalog, deletes | set(upserts))
        _copy_vectors(live.vectors, kept_rows, spool)
        if set_spool is not None:
            set_spool.copy_live_except(deletes | set(upserts))
        changed_in_live = len(live.catalog.content_hashes([*deletes, *upserts]))
        copied_items = live.n_items - changed_in_live
        for batch in batched(upserts.values(), options.batch_size):
            encoded = encode_batch(batch, encoder, options.max_image_pixels, live)
            store_batch(batch, encoded, writer, spool, counts)
            if set_spool is not None:
                stored = {item_id for item_id, _ in encoded.rows}
                reused = encoded.plan.reused.keys()
                set_spool.add_batch(batch, stored, options.max_image_pixels, reused)
        if spool.n_rows == 0:
            raise BuildError("these changes would leave the index without any item")
        writer.finish()
        if set_spool is not None:
            set_spool.finish()
        vectors = spool.finish()
    finally:
        spool.close()
        if set_spool is not None:
            set_spool.close()
        writer.abort()
    _count_copied(counts, staging, copied_items, len(kept_rows), live.n_items)
    return counts, vectors, kept_rows


def _set_spool(staging: Path, live: LiveVectors, encoder: Encoder) -> SetSpool | None:
    """A spool for the new snapshot's set rows when the live ones can be carried over
    (made by the encoder's set heads); else None, and the snapshot has no set rows:
    encoding the sets of every item is a full re-index's work."""
    sets = set_encoder_of(encoder)
    if sets is None or live.sets is None:
        if sets is not None and (staging.parent / live.version / SET_ROWS_FILE).is_file():
            logger.warning(
                "the live set rows come from other set heads: the new snapshot has none "
                "(set search answers 422) until a full re-index"
            )
        return None
    return SetSpool(staging, sets, encoder.dim, live.sets)


def _copy_vectors(vectors: np.ndarray, rows: np.ndarray, spool: NpySpool) -> None:
    for start in range(0, rows.size, _COPY_ROWS):
        spool.append(np.asarray(vectors[rows[start : start + _COPY_ROWS]], dtype=np.float32))


def _count_copied(
    counts: BuildCounts, staging: Path, copied_items: int, copied_rows: int, live_items: int
) -> None:
    """Add the items copied whole to the counts of the upserts encoded (or reused)."""
    catalog = Catalog.open(staging / CATALOG_FILE)
    try:
        counts.items, counts.kinds = catalog.n_items, Counter(catalog.kind_counts())
    finally:
        catalog.close()
    changes = counts.changes
    changes.items_reused += copied_items
    changes.vectors_reused += copied_rows
    changes.items_removed = live_items - copied_items - counts.kept_from_live


def _publish_on(index_dir: Path, staging: Path, manifest: Manifest, base: str) -> None:
    """Make the snapshot CURRENT only if CURRENT is still the one it was built on."""
    with publish_lock(index_dir):
        if read_current(index_dir) != base:
            raise LiveMovedError(f"snapshot {base} is no longer live")
        publish(index_dir, staging, manifest.version)
