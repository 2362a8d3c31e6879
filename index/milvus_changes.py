"""Item changes on the Milvus backend: deletes and inserts in the live collection.

A full build writes a new collection; item changes (:mod:`index.changes`) do not.
The new snapshot shares its base's collection: only the rows of upserted items go
in, under fresh keys above the base snapshot's largest, and the rows of changed and
deleted items are deleted once the new snapshot is published. The catalog,
``vectors.npy`` and the prototypes are still written whole into the new snapshot's
folder (they are the small part), with rows numbered from 0 as always; the
snapshot's :data:`~index.milvus_index.KEYS_FILE` maps its rows to the collection's
keys.

Order, and what a search sees meanwhile:

1. leftovers of an apply that died on this base are deleted (its rows retired by a
   published snapshot but not yet deleted, its inserts above the base's largest key);
2. the new rows are inserted. Snapshots still served search only keys up to their own
   largest one, so they do not see them;
3. the snapshot is published (CURRENT, then the alias);
4. the replaced and deleted rows are deleted. The new snapshot skips them until then
   (it does not know their keys). A process still serving an older snapshot sharing
   the collection stops finding the changed items from here until it loads the new
   one (its poll interval, or at once on the Redis announcement); it never returns
   a row its own catalog lacks.

Applies are serialised by :func:`index.changes.changes_lock` and always start from
CURRENT, the newest snapshot of its collection, so no published snapshot holds a key
above the base's largest (step 1 deletes only what no snapshot holds).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.backends import MILVUS, IndexBackend
from index.manifest import Manifest
from index.milvus_index import KEYS_FILE, MilvusStore, MilvusUnavailableError, read_keys

logger = logging.getLogger(__name__)

RETIRED_FILE = "milvus_retired.npy"  # keys this snapshot replaced, deleted after publish


@dataclass(frozen=True)
class InPlaceChanges:
    """The live collection a set of item changes is written into."""

    store: MilvusStore
    collection: str
    base_path: Path
    base_keys: np.ndarray

    @property
    def next_key(self) -> int:
        return int(self.base_keys[-1]) + 1 if self.base_keys.size else 0

    @contextmanager
    def rows_written(
        self, staging: Path, vectors: np.ndarray, kept_rows: np.ndarray
    ) -> Iterator[None]:
        """Insert the rows after the ``kept_rows`` copied from the base (the upserted
        items'), and record the new snapshot's keys in ``staging``. An exception inside
        before the snapshot is installed (``staging`` renamed) deletes them again."""
        self._delete_leftovers()
        kept_keys = self.base_keys[kept_rows]
        fresh = np.asarray(vectors[kept_rows.size :], dtype=np.float32)
        self.store.insert(self.collection, fresh, first_key=self.next_key)
        new_keys = np.arange(self.next_key, self.next_key + fresh.shape[0], dtype=np.int64)
        np.save(staging / KEYS_FILE, np.concatenate([kept_keys, new_keys]))
        np.save(staging / RETIRED_FILE, np.setdiff1d(self.base_keys, kept_keys))
        try:
            yield
        except BaseException:
            if staging.exists():  # once published, the snapshot needs its rows
                self._forget_inserts()
            raise

    def retire(self, published: Path) -> None:
        """Delete the rows the published snapshot replaced (a failure is only logged:
        they stay skipped, and the next apply on it deletes them)."""
        try:
            self.store.delete(self.collection, np.load(published / RETIRED_FILE))
        except MilvusUnavailableError as exc:
            logger.warning("replaced rows stay in %s for now: %s", self.collection, exc)

    def _delete_leftovers(self) -> None:
        retired = self.base_path / RETIRED_FILE
        if retired.exists():
            self.store.delete(self.collection, np.load(retired))
        self.store.delete(self.collection, from_key=self.next_key)

    def _forget_inserts(self) -> None:
        try:
            self.store.delete(self.collection, from_key=self.next_key)
        except MilvusUnavailableError as exc:  # the apply's own error matters more
            logger.warning("rows of a failed apply left in %s: %s", self.collection, exc)


def in_place_target(
    backend: IndexBackend, base_path: Path, base_manifest: Manifest
) -> InPlaceChanges | None:
    """Where changes to this base go in place; None when its vectors are not in the
    configured Milvus (a FAISS base: the changes build a new collection then)."""
    store = backend.milvus
    if store is None or base_manifest.backend != MILVUS or base_manifest.collection is None:
        return None
    keys = read_keys(base_path, base_manifest.n_vectors)
    return InPlaceChanges(store, base_manifest.collection, base_path, keys)
