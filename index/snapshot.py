"""An immutable, versioned snapshot: FAISS index + catalog + raw vectors + manifest.

Search returns one match per *item*: an item may own several rows (its photo,
each caption, its recipe); its score is its best row's, and the match says which
kind of row won. Rows are over-fetched and the fetch widened until k distinct
items are found or the candidate rows run out. Small filtered candidate sets
(at most ``EXACT_SEARCH_MAX_ROWS`` rows) on approximate indexes are scored
exactly from ``vectors.npy`` instead, so a narrow filter still finds its k items
where HNSW's graph walk or IVF's probed lists would miss some.
Queries are L2-normalised, so scores are cosine similarities.

Every snapshot also carries its class prototypes (:mod:`index.prototypes`):
:meth:`Snapshot.match_classes` ranks them for a query, and ``ranking=Ranking("hybrid")``
mixes an item's class prototype into its score (:mod:`index.ranking`).
"""

from __future__ import annotations

import logging
import sqlite3
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from index.backends import MILVUS, IndexBackend
from index.catalog import Catalog, Item, ItemSummary
from index.layout import (
    CorruptSnapshotError,
    NoSnapshotError,
    SnapshotError,
    SnapshotLease,
    publish,
    read_current,
)
from index.manifest import Manifest
from index.prototypes import ClassMatch, PrototypeTable
from index.ranking import RankedRows, Ranking, RowScorer
from index.set_search import SetRows
from index.vector_index import DimensionMismatchError, SearchableIndex, VectorIndex, as_matrix
from models.encoders.base import l2_normalize

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
CATALOG_FILE = "catalog.sqlite"
VECTORS_FILE = "vectors.npy"
EXACT_SEARCH_MAX_ROWS = 4096
_WIDEN_FACTOR = 4

__all__ = [
    "CorruptSnapshotError",
    "DimensionMismatchError",
    "FingerprintMismatchError",
    "InvalidQueryError",
    "ItemMatch",
    "NoSnapshotError",
    "Snapshot",
    "SnapshotError",
    "UnknownItemError",
    "load_current",
    "publish",
    "read_current",
]


class FingerprintMismatchError(SnapshotError, ValueError):
    def __init__(self, version: str, built_with: str, loaded: str) -> None:
        super().__init__(
            f"snapshot {version} was built with model {built_with} but the loaded model "
            f"is {loaded}; re-index with this model"
        )
        self.version = version
        self.built_with = built_with
        self.loaded = loaded


class InvalidQueryError(ValueError):
    """The query vector or search arguments cannot be searched with.

    The one such error: the service raises it too, for a request that passed schema
    validation but is still unusable (k, vector, kinds).
    """


class UnknownItemError(LookupError):
    """No item with this id in the snapshot."""


@dataclass(frozen=True)
class ItemMatch:
    item_id: str
    score: float
    rank: int
    kind: str
    metadata: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    class_name: str | None = None  # the item's class in the prototype table
    item_score: float | None = None  # hybrid ranking: sim(q, item)
    class_score: float | None = None  # hybrid ranking: sim(q, proto(class))


@dataclass(frozen=True)
class _Hit:
    item_id: str
    score: float
    kind: str
    row: int
    item_score: float
    class_score: float  # NaN: no class term


class Snapshot:
    """A loaded snapshot; read-only and safe to search from many threads.

    One opened with :meth:`open` holds a :class:`~index.layout.SnapshotLease` on
    its directory until :meth:`close` or until the object is garbage-collected
    (when the last request holding it lets go), so pruning never deletes it
    while it is in use.
    """

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        index: SearchableIndex,
        catalog: Catalog,
        vectors: np.ndarray,
        prototypes: PrototypeTable | None = None,
        sets: SetRows | None = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.index = index
        self.catalog = catalog
        self.vectors = vectors
        self.prototypes = prototypes or PrototypeTable.empty(manifest.dim, manifest.n_vectors)
        self.sets = sets  # DivE set rows, apart from the index (None: built without a set head)
        self._lease: SnapshotLease | None = None

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @classmethod
    def open(
        cls,
        path: Path | str,
        expected_fingerprint: str | None = None,
        *,
        use_gpu: bool = False,
        backend: IndexBackend | None = None,
    ) -> Snapshot:
        """Load a version directory; the fingerprint is checked before big files load.

        ``use_gpu`` mirrors the FAISS index onto the GPUs when there are any; ``backend``
        opens the snapshots whose manifest says Milvus (FAISS ones need none).
        """
        path = Path(path)
        try:
            lease = SnapshotLease(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise CorruptSnapshotError(f"snapshot {path} does not exist") from exc
        try:
            snapshot = cls._load(path, expected_fingerprint, use_gpu, backend)
        except BaseException:
            lease.release()
            raise
        snapshot._lease = lease
        weakref.finalize(snapshot, lease.release)
        return snapshot

    @classmethod
    def _load(
        cls,
        path: Path,
        expected_fingerprint: str | None,
        use_gpu: bool,
        backend: IndexBackend | None,
    ) -> Snapshot:
        manifest = Manifest.read(path)
        if expected_fingerprint is not None and manifest.model_fingerprint != expected_fingerprint:
            raise FingerprintMismatchError(
                manifest.version, manifest.model_fingerprint, expected_fingerprint
            )
        try:
            index = _open_index(path, manifest, backend or IndexBackend())
            vectors = np.load(path / VECTORS_FILE, mmap_mode="r")
            catalog = Catalog.open(path / CATALOG_FILE)
            sets = SetRows.load(path)
        except (OSError, RuntimeError, ValueError, sqlite3.Error) as exc:
            raise CorruptSnapshotError(f"snapshot {path} cannot be loaded: {exc}") from exc
        _check_consistent(path, manifest, index, catalog, vectors)
        try:
            prototypes = PrototypeTable.load(path, manifest.n_vectors, manifest.dim)
        except CorruptSnapshotError:
            catalog.close()
            raise
        if use_gpu and isinstance(index, VectorIndex):
            index.enable_gpu()
        return cls(path, manifest, index, catalog, vectors, prototypes, sets)

    def close(self) -> None:
        """Release the catalog connection and the lease; other resources go with the
        last reference."""
        self.catalog.close()
        if self._lease is not None:
            self._lease.release()

    # ------------------------------------------------------------------ lookups

    def get_item(self, item_id: str) -> Item | None:
        return self.catalog.get_item(item_id)

    def image_path(self, item_id: str) -> Path | None:
        """The photo file indexed for this item (None: unknown item, or no photo)."""
        return self.catalog.image_path(item_id)

    def item_vectors(self, item_id: str, kinds: Sequence[str] | None = None) -> np.ndarray:
        """(m, dim) vectors of an item's rows (m may be 0 when no row has these kinds).

        UnknownItemError when the item does not exist.
        """
        rows = self.catalog.rows_of_item(item_id, kinds)
        if rows.size == 0 and self.catalog.get_item(item_id) is None:
            raise UnknownItemError(f"no item {item_id!r} in snapshot {self.version}")
        return np.array(self.vectors[rows], dtype=np.float32)

    # ------------------------------------------------------------------ search

    def match_classes(self, query: np.ndarray, n: int) -> list[ClassMatch]:
        """The n classes whose prototypes are most similar to one (dim,) query."""
        return self.prototypes.top(self._prepare_query(query)[0], n)

    def search(
        self,
        query: np.ndarray,
        k: int,
        kinds: Sequence[str] | None = None,
        filters: Mapping[str, Any] | None = None,
        exclude_ids: Collection[str] = (),
        ranking: Ranking | None = None,
    ) -> list[ItemMatch]:
        """Best k items for one (dim,) query; ranks 1..k, best first.

        ``ranking`` defaults to item similarity (see :mod:`index.ranking`).
        DimensionMismatchError for a wrong-size query, InvalidQueryError for a
        zero / non-finite query or k < 1, FilterError for malformed filters.
        """
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise InvalidQueryError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        unit_query = self._prepare_query(query)
        allowed = self.catalog.allowed_rows(kinds, filters)
        scorer = RowScorer(
            ranking or Ranking(),
            self.prototypes.scores(unit_query[0]),
            self.prototypes.row_classes,
        )
        hits = self._best_items(unit_query, k, allowed, frozenset(exclude_ids), scorer)
        items = self.catalog.describe_items([h.item_id for h in hits])
        return [self._match(hit, rank, items[hit.item_id]) for rank, hit in enumerate(hits, 1)]

    def search_sets(
        self, query_set: np.ndarray, k: int, exclude_ids: Collection[str] = ()
    ) -> list[ItemMatch]:
        """Best k items for a (K, dim) query set by smooth-Chamfer over their set rows
        (:mod:`index.set_search`); ranks 1..k, best first. InvalidQueryError when the
        snapshot has no set rows, k < 1 or the query set is not finite and non-zero."""
        if self.sets is None:
            raise InvalidQueryError(f"snapshot {self.version} has no set rows")
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise InvalidQueryError(f"k must be a positive integer, got {k!r}")
        matrix = as_matrix(query_set, self.dim)
        if not np.all(np.isfinite(matrix)) or not np.all(matrix.any(axis=1)):
            raise InvalidQueryError("query set vectors must be finite and non-zero")
        hits = self.sets.search(matrix, int(k), exclude_ids)
        items = self.catalog.describe_items([h.item_id for h in hits])
        described = [(hit, items[hit.item_id]) for hit in hits]
        return [
            ItemMatch(hit.item_id, hit.score, rank, hit.kind, item.metadata, item.label)
            for rank, (hit, item) in enumerate(described, 1)
        ]

    def _match(self, hit: _Hit, rank: int, item: ItemSummary) -> ItemMatch:
        hybrid = not np.isnan(hit.class_score)
        return ItemMatch(
            item_id=hit.item_id,
            score=hit.score,
            rank=rank,
            kind=hit.kind,
            metadata=item.metadata,
            label=item.label,
            class_name=self.prototypes.class_name_of_row(hit.row),
            item_score=hit.item_score if hybrid else None,
            class_score=hit.class_score if hybrid else None,
        )

    def _prepare_query(self, query: np.ndarray) -> np.ndarray:
        matrix = as_matrix(query, self.dim)
        if matrix.shape[0] != 1:
            raise InvalidQueryError(f"expected one query vector, got {matrix.shape[0]}")
        if not np.all(np.isfinite(matrix)):
            raise InvalidQueryError("query vector contains NaN or infinity")
        unit = l2_normalize(matrix)  # overflow-safe for huge finite values
        if not unit.any():
            raise InvalidQueryError("query vector is all zeros")
        return unit

    def _best_items(
        self,
        query: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        exclude: frozenset[str],
        scorer: RowScorer,
    ) -> list[_Hit]:
        n_candidates = self.index.ntotal if allowed is None else int(allowed.size)
        if n_candidates == 0:
            return []
        if (
            allowed is not None
            and not self.index.is_exact
            and n_candidates <= EXACT_SEARCH_MAX_ROWS
        ):
            scores = np.asarray(self.vectors[allowed], dtype=np.float32) @ query[0]
            return self._group_by_item(scorer.rank(scores, allowed), k, exclude)
        fetch = min(n_candidates, 2 * k + 16)
        while True:
            scores, rows = self.index.search(query, fetch, allowed)
            found = rows[0] >= 0
            hits = self._group_by_item(scorer.rank(scores[0][found], rows[0][found]), k, exclude)
            exhausted = fetch >= n_candidates or int(found.sum()) < fetch
            if exhausted or self._settled(hits, k, scorer, float(scores[0][found][-1])):
                return hits
            fetch = min(n_candidates, fetch * _WIDEN_FACTOR)

    @staticmethod
    def _settled(hits: list[_Hit], k: int, scorer: RowScorer, last_item_score: float) -> bool:
        """k items found, and no row beyond the fetched ones could outrank the k-th."""
        return len(hits) >= k and hits[k - 1].score >= scorer.unseen_bound(last_item_score)

    def _group_by_item(self, ranked: RankedRows, k: int, exclude: frozenset[str]) -> list[_Hit]:
        """First (= best) row per item, in ranking order, up to k items.

        Rows are looked up in the catalog a slice at a time, so an exact scan of
        thousands of rows only describes the few it needs.
        """
        best: dict[str, _Hit] = {}
        step = max(4 * k, 64)
        for start in range(0, len(ranked.rows), step):
            described = self.catalog.describe_rows(ranked.rows[start : start + step])
            for offset, (item_id, kind) in enumerate(described, start):
                if item_id in exclude or item_id in best:
                    continue
                best[item_id] = _Hit(
                    item_id,
                    float(ranked.scores[offset]),
                    kind,
                    int(ranked.rows[offset]),
                    float(ranked.item_scores[offset]),
                    float(ranked.class_scores[offset]),
                )
                if len(best) == k:
                    return list(best.values())
        return list(best.values())


def _open_index(path: Path, manifest: Manifest, backend: IndexBackend) -> SearchableIndex:
    if manifest.backend == MILVUS:
        return backend.open(path, manifest)
    index = VectorIndex.load(path / INDEX_FILE, manifest.factory)
    _apply_search_knobs(index, manifest)
    return index


def _apply_search_knobs(index: VectorIndex, manifest: Manifest) -> None:
    """Search as the build tuned it; older manifests leave VectorIndex's defaults."""
    if manifest.ef_search is not None:
        index.ef_search = manifest.ef_search
    if manifest.nprobe is not None:
        index.nprobe = manifest.nprobe


def _check_consistent(
    path: Path, manifest: Manifest, index: SearchableIndex, catalog: Catalog, vectors: np.ndarray
) -> None:
    expected = (manifest.n_vectors, manifest.dim)
    problems = []
    if vectors.shape != expected or vectors.dtype != np.float32:
        problems.append(f"{VECTORS_FILE} is {vectors.dtype}{vectors.shape}, expected {expected}")
    if (index.ntotal, index.dim) != expected:
        problems.append(f"{INDEX_FILE} has {index.ntotal}x{index.dim}, expected {expected}")
    if (catalog.n_vectors, catalog.n_items) != (manifest.n_vectors, manifest.n_items):
        problems.append(
            f"{CATALOG_FILE} has {catalog.n_items} items / {catalog.n_vectors} rows, "
            f"expected {manifest.n_items} / {manifest.n_vectors}"
        )
    if problems:
        catalog.close()
        raise CorruptSnapshotError(f"snapshot {path} is inconsistent: " + "; ".join(problems))


def load_current(
    index_dir: Path | str,
    expected_fingerprint: str | None = None,
    *,
    use_gpu: bool = False,
    backend: IndexBackend | None = None,
) -> Snapshot:
    """Open the snapshot CURRENT names (NoSnapshotError when there is none)."""
    index_dir = Path(index_dir)
    version = read_current(index_dir)
    if version is None:
        raise NoSnapshotError(
            f"no index snapshot published in {index_dir}; build one with "
            "`mmsearch index ...` or POST /admin/reindex"
        )
    return Snapshot.open(
        index_dir / version, expected_fingerprint, use_gpu=use_gpu, backend=backend
    )
