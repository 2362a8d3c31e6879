"""A build's set rows (DivE): K vectors per image, text and recipe of each item, when the
encoder is a bundle with set heads (``encoder.sets``, :mod:`models.set_encoding`).

They are spooled into the staging directory batch by batch beside ``vectors.npy``
(:class:`SetSpool`), and indexed once the main index is built, with its factory and
tuned knobs (:func:`finish_set_rows`). Only the single-process build writes them:
chunked builds and item changes publish snapshots without set rows (set search then
answers that the snapshot has none), and an item whose vectors are re-used from the
live snapshot still has its set re-encoded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index.autotune import AUTO, Tuning, TuningPolicy, resolve_factory
from index.set_search import SET_VECTORS_FILE, SetRows, set_kind
from index.spool import NpySpool
from models.images import InvalidImageError, load_image
from models.types import CatalogRecord

PENDING_FILE = "set_rows.pending.json"  # entries spooled so far; gone once indexed


def set_encoder_of(encoder: object) -> Any | None:
    """The encoder's set encoder (a bundle with set heads), or None."""
    return getattr(encoder, "sets", None)


class SetSpool:
    """Set vectors of a build, appended to ``set_vectors.npy`` in staging as encoded."""

    def __init__(self, staging: Path, sets: Any, dim: int) -> None:
        self.staging = staging
        self.sets = sets
        self.spool = NpySpool(staging / SET_VECTORS_FILE, dim)
        self.entries: list[tuple[str, str]] = []

    def add_batch(self, batch: Sequence[CatalogRecord], stored: set[str], max_pixels: int) -> None:
        """Encode the sets of the batch's ``stored`` items (those that got rows)."""
        records = [r for r in batch if r.id in stored]
        if self.sets.has("image"):
            self._images(records, max_pixels)
        if self.sets.has("text"):
            texts = [(r.id, t) for r in records for t in r.texts if t.strip()]
            self._append("text", [i for i, _ in texts], self.sets.text_sets([t for _, t in texts]))
            recipes = [(r.id, r.recipe) for r in records if r.recipe is not None]
            vectors = self.sets.recipe_sets([recipe for _, recipe in recipes])
            self._append("recipe", [i for i, _ in recipes], vectors)

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
        pending = {"slots": int(self.sets.slots), "entries": [list(e) for e in self.entries]}
        (self.staging / PENDING_FILE).write_text(json.dumps(pending, ensure_ascii=False))

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
    rows = SetRows.index_written(staging, entries, slots, factory, chosen)
    pending.unlink()
    return int(rows.vectors.shape[0])
