"""A build's set rows (DivE): K vectors per image, text and recipe of each item, when the
encoder is a bundle with set heads (``encoder.sets``, :mod:`models.set_encoding`).

They are spooled into the staging directory batch by batch beside ``vectors.npy``
(:class:`SetSpool`), and indexed once the main index is built, with its factory and
tuned knobs (:func:`finish_set_rows`). An item whose single vectors are copied from the
live snapshot (incremental re-index, item changes) gets its live sets copied too when
the same set heads made them (:mod:`index.set_reuse`); the rest are encoded.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index.autotune import AUTO, Tuning, TuningPolicy, resolve_factory
from index.set_reuse import LiveSets
from index.set_search import SET_VECTORS_FILE, SetRows, set_kind
from index.spool import NpySpool
from models.images import InvalidImageError, load_image
from models.types import CatalogRecord

PENDING_FILE = "set_rows.pending.json"  # entries spooled so far; gone once indexed
_MERGE_ROWS = 65_536  # rows copied at a time from a chunk's memory-mapped set rows


def expected_set_kinds(record: CatalogRecord, sets: Any) -> list[str]:
    """Kinds of the sets a full encode of this record makes, in spool order per item."""
    kinds = [set_kind("image")] if record.image_path is not None and sets.has("image") else []
    if sets.has("text"):
        kinds += [set_kind("text") for text in record.texts if text.strip()]
        kinds += [set_kind("recipe")] if record.recipe is not None else []
    return kinds


class SetSpool:
    """Set vectors of a build, appended to ``set_vectors.npy`` in staging as encoded or
    copied from ``live`` (the live snapshot's sets, when the same heads made them)."""

    def __init__(
        self,
        staging: Path,
        sets: Any,
        dim: int,
        live: LiveSets | None = None,
        names: tuple[str, str] = (SET_VECTORS_FILE, PENDING_FILE),
    ) -> None:
        """``names``: the vectors' and entries' files in ``staging`` (a chunk's differ)."""
        self.staging = staging
        self.sets = sets
        self.live = live
        self.names = names
        self.spool = NpySpool(staging / names[0], dim)
        self.entries: list[tuple[str, str]] = []

    def copy_live_except(self, excluded: Collection[str]) -> None:
        """Copy every live set of the items not ``excluded`` (item changes' untouched items)."""
        if self.live is None:
            raise ValueError("no live set rows to copy")
        for entries, rows in self.live.all_but(excluded):
            self.spool.append(rows)
            self.entries += entries

    def add_batch(
        self,
        batch: Sequence[CatalogRecord],
        stored: set[str],
        max_pixels: int,
        reused: Collection[str] = (),
    ) -> None:
        """Spool the sets of the batch's ``stored`` items (those that got rows): copied
        from the live snapshot for ``reused`` items (their single vectors were copied)
        whose live sets are all there, encoded for the rest."""
        records = [r for r in batch if r.id in stored]
        copied = self._copy_reused([r for r in records if r.id in reused])
        records = [r for r in records if r.id not in copied]
        if self.sets.has("image"):
            self._images(records, max_pixels)
        if self.sets.has("text"):
            texts = [(r.id, t) for r in records for t in r.texts if t.strip()]
            self._append("text", [i for i, _ in texts], self.sets.text_sets([t for _, t in texts]))
            recipes = [(r.id, r.recipe) for r in records if r.recipe is not None]
            vectors = self.sets.recipe_sets([recipe for _, recipe in recipes])
            self._append("recipe", [i for i, _ in recipes], vectors)

    def _copy_reused(self, records: Sequence[CatalogRecord]) -> set[str]:
        copied: set[str] = set()
        if self.live is None:
            return copied
        for record in records:
            kinds, rows = self.live.sets_of(record.id)
            if kinds != expected_set_kinds(record, self.sets):
                continue  # e.g. an image unreadable last time: encode its sets again
            if kinds:
                self.spool.append(rows)
                self.entries += [(record.id, kind) for kind in kinds]
            copied.add(record.id)
        return copied

    def _images(self, records: Sequence[CatalogRecord], max_pixels: int) -> None:
        ids, images = [], []
        for record in records:
            if record.image_path is None:
                continue
            try:  # unreadable images were logged and counted by the main encode already
                images.append(load_image(record.image_path, max_pixels=max_pixels))
            except InvalidImageError:
                continue
            ids.append(record.id)
        try:
            self._append("image", ids, self.sets.image_sets(images) if images else None)
        finally:
            for image in images:
                image.close()

    def _append(self, kind: str, ids: list[str], sets: np.ndarray | None) -> None:
        if not ids or sets is None:
            return
        self.spool.append(sets.reshape(-1, sets.shape[-1]))
        self.entries += [(item_id, set_kind(kind)) for item_id in ids]

    def finish(self) -> None:
        self.spool.finish()
        pending = {
            "slots": int(self.sets.slots),
            "heads": self.sets.digest,
            "entries": [list(e) for e in self.entries],
        }
        (self.staging / self.names[1]).write_text(json.dumps(pending, ensure_ascii=False))

    def close(self) -> None:
        self.spool.close()


def finish_set_rows(staging: Path, policy: TuningPolicy, main: Tuning) -> int:
    """Index the spooled set rows, if the build spooled any; returns how many rows. The
    index holds one mean per set: its factory is ``auto``'s for the set count; the knobs
    are the main index's tuned ones."""
    pending = staging / PENDING_FILE
    if not pending.is_file():
        return 0
    meta = json.loads(pending.read_text(encoding="utf-8"))
    entries = [(str(item_id), str(kind)) for item_id, kind in meta["entries"]]
    slots = int(meta["slots"])
    dim = int(np.load(staging / SET_VECTORS_FILE, mmap_mode="r").shape[1])
    factory = resolve_factory(AUTO, len(entries), dim, policy)  # one mean per set
    knobs = {"ef_search": main.ef_search, "nprobe": main.nprobe}
    chosen = {name: value for name, value in knobs.items() if value is not None}
    rows = SetRows.index_written(staging, entries, slots, factory, chosen, meta.get("heads"))
    pending.unlink()
    return int(rows.vectors.shape[0])


def merge_set_parts(parts: Sequence[tuple[Path, Path]], staging: Path, dim: int) -> None:
    """Spool the set rows of a chunked build's parts ((vectors, entries) files each, in
    chunk order, all from one set head digest) into ``staging``, as one build would."""
    spool = NpySpool(staging / SET_VECTORS_FILE, dim)
    entries: list[list[str]] = []
    heads: set[str] = set()
    slots: set[int] = set()
    try:
        for vectors_file, entries_file in parts:
            part = json.loads(entries_file.read_text(encoding="utf-8"))
            vectors = np.load(vectors_file, mmap_mode="r")
            if vectors.shape != (len(part["entries"]) * int(part["slots"]), dim):
                raise ValueError(f"{vectors_file.name}: {vectors.shape} do not fit its entries")
            for start in range(0, vectors.shape[0], _MERGE_ROWS):
                spool.append(np.asarray(vectors[start : start + _MERGE_ROWS], dtype=np.float32))
            entries += part["entries"]
            heads.add(part["heads"])
            slots.add(int(part["slots"]))
        if len(heads) > 1 or len(slots) > 1:
            raise ValueError("the chunks' set rows come from different set heads")
        spool.finish()
    finally:
        spool.close()
    pending = {"slots": slots.pop(), "heads": heads.pop(), "entries": entries}
    (staging / PENDING_FILE).write_text(json.dumps(pending, ensure_ascii=False))
