"""The live snapshot's set rows (DivE), read to copy unchanged items' sets instead of
encoding them again (item changes, incremental re-index, :mod:`index.set_build`).

Only sets made by the very heads the encoder has are copied: ``set_rows.json`` records
their digest (:attr:`models.set_encoding.SetEncoder.digest`), since a bundle's set heads
lie outside its model fingerprint and may change while its single vectors stay reusable.
Set rows without a digest (written before it existed), or with another one, copy
nothing: a full re-index then encodes every set; item changes publish no set rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from index.set_search import INDEXED_MEANS, SET_ROWS_FILE, SET_VECTORS_FILE

logger = logging.getLogger(__name__)

SetEntry = tuple[str, str]  # (item_id, kind)
_COPY_SETS = 16_384  # sets copied at a time: the live rows are memory-mapped


class LiveSets:
    """Live set rows: ``entries[i] = (item_id, kind)`` owns rows i*K .. i*K+K-1."""

    def __init__(self, entries: list[tuple[str, str]], slots: int, vectors: np.ndarray) -> None:
        self.entries = entries
        self.slots = slots
        self.vectors = vectors
        self.by_item: dict[str, list[int]] = {}
        for number, (item_id, _) in enumerate(entries):
            self.by_item.setdefault(item_id, []).append(number)

    def sets_of(self, item_id: str) -> tuple[list[str], np.ndarray]:
        """The item's set kinds and their (sets x K, dim) rows, in live order."""
        numbers = self.by_item.get(item_id, [])
        kinds = [self.entries[n][1] for n in numbers]
        return kinds, np.asarray(self.vectors[_rows(np.array(numbers, np.int64), self.slots)])

    def all_but(self, excluded: Collection[str]) -> Iterator[tuple[list[SetEntry], np.ndarray]]:
        """Chunks of (entries, rows) of every set whose item is not ``excluded``, in order."""
        kept = np.array(
            [n for n, (item_id, _) in enumerate(self.entries) if item_id not in excluded],
            np.int64,
        )
        for start in range(0, kept.size, _COPY_SETS):
            chunk = kept[start : start + _COPY_SETS]
            entries = [self.entries[int(n)] for n in chunk]
            yield entries, np.asarray(self.vectors[_rows(chunk, self.slots)], dtype=np.float32)


def _rows(sets: np.ndarray, slots: int) -> np.ndarray:
    return (sets[:, None] * slots + np.arange(slots)[None, :]).reshape(-1)


def set_encoder_of(encoder: object) -> Any | None:
    """The encoder's set encoder (a bundle with set heads), or None."""
    return getattr(encoder, "sets", None)


def open_live_sets(path: Path, sets: Any | None, dim: int) -> LiveSets | None:
    """The set rows of the snapshot at ``path`` when ``sets`` (the encoder's set encoder)
    made them: same head digest, slot count and width; else None."""
    if sets is None or not (path / SET_ROWS_FILE).is_file():
        return None
    try:
        meta = json.loads((path / SET_ROWS_FILE).read_text(encoding="utf-8"))
        if meta.get("index") != INDEXED_MEANS or meta.get("heads") != sets.digest:
            logger.info("set rows of %s come from other set heads: not copied", path.name)
            return None
        slots = int(meta["slots"])
        vectors = np.load(path / SET_VECTORS_FILE, mmap_mode="r")
        entries = [(str(item_id), str(kind)) for item_id, kind in meta["entries"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("not copying the set rows of %s: %s", path.name, exc)
        return None
    if slots != sets.slots or vectors.shape != (len(entries) * slots, dim):
        logger.warning("set rows of %s do not fit the set heads: not copied", path.name)
        return None
    return LiveSets(entries, slots, vectors)
