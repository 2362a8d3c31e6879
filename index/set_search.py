"""Set rows (DivE): K vectors per item set, searched apart from the single-vector index.

A bundle with a set head gives an item a *set* of K vectors per modality (kind
``image_set``, ``text_set``, ``recipe_set``; :func:`set_kind`). They are stored in
files of their own in the snapshot, beside the single-vector index, not as rows of
``index.faiss``: so a plain search can never return them, and nothing that reads
``vectors.npy`` (prototypes, item changes, re-use) has to learn to skip them.

- ``set_vectors.npy``: (sets x K, dim) float32, each set's K rows one after another;
- ``set_rows.json``: the slot count K and, per set, its item id and kind;
- ``set_index.faiss``: a FAISS index over each set's *mean* vector (normalised), one row
  per set (the build chooses the factory).

Search with a query set (Kq, dim): the query set's mean probes the index once, for
``K x (k + 16)`` sets, and those candidates are re-scored with the exact
smooth-Chamfer similarity (:func:`models.set_scores.smooth_chamfer_scores`). An item's
score is its best set's. The gathering is approximate, as any two-stage search is: a
set whose mean is far from the query set's mean is not re-scored.

Why the mean and not each slot: an index over all K slots of every set, probed by each
of the K query vectors, made a set search K graph searches in a graph K times bigger
(6x a single search at 100k items, synthetic sets); one probe of an index of means
costs about one single search and, on the same synthetic sets, gathered more of the
exhaustive smooth-Chamfer top 10 (docs/reranking.md). Trained slots that spread far
from their mean would favour per-slot probes; the ones trained for food-v1 stay near
their mean (slot cosine 0.99, docs/reranking.md), and none is shipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.layout import atomic_write_text
from index.vector_index import VectorIndex, add_rows, as_matrix
from models.encoders.base import l2_normalize
from models.set_scores import smooth_chamfer_scores
from models.set_similarity import DEFAULT_ALPHA

logger = logging.getLogger(__name__)

SET_VECTORS_FILE = "set_vectors.npy"
SET_ROWS_FILE = "set_rows.json"
SET_INDEX_FILE = "set_index.faiss"
SET_KIND_SUFFIX = "_set"
SET_KNOBS = frozenset({"ef_search", "nprobe"})
# set_rows.json's "index": what set_index.faiss holds. Snapshots written before it held
# every slot; they load as having no set rows (re-index), not as corrupt.
INDEXED_MEANS = "set_means"
_MAX_TRAINING_ROWS = 200_000
_MEAN_CHUNK_SETS = 16_384  # sets averaged at a time: the spooled rows are memory-mapped
# Sets the probe fetches: K x (k + 16), the count the per-slot probes fetched, so as
# many sets are re-scored (an item may have several sets: image, text, recipe).
_FETCH_MARGIN = 16


def set_kind(kind: str) -> str:
    """The kind of the set rows made from an item's ``kind`` rows (``image`` -> ``image_set``)."""
    return kind + SET_KIND_SUFFIX


class SetRowsError(ValueError):
    """Set rows that are malformed or inconsistent with each other."""


@dataclass(frozen=True)
class SetHit:
    item_id: str
    score: float  # smooth-Chamfer of the query set and the item's best set
    kind: str  # that set's kind


class SetRows:
    """An item-set table: ``entries[i] = (item_id, kind)`` owns rows i*K .. i*K+K-1."""

    def __init__(
        self,
        entries: Sequence[tuple[str, str]],
        slots: int,
        vectors: np.ndarray,
        index: VectorIndex,
    ) -> None:
        if slots < 1 or vectors.shape[0] != len(entries) * slots or index.ntotal != len(entries):
            raise SetRowsError(
                f"{len(entries)} sets of {slots} slots do not fit {vectors.shape[0]} vectors "
                f"and {index.ntotal} index rows (one mean per set)"
            )
        self.entries = list(entries)
        self.slots = slots
        self.vectors = vectors
        self.index = index

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def write(
        cls,
        directory: Path,
        entries: Sequence[tuple[str, str]],
        sets: np.ndarray,
        factory: str = "Flat",
        knobs: Mapping[str, int] | None = None,
    ) -> SetRows:
        """Save (sets, K, dim) vectors of ``entries`` into ``directory`` and return them,
        searchable. ``factory`` is a FAISS factory string for the set rows' index and
        ``knobs`` its search knobs (``ef_search``, ``nprobe``): the build passes the main
        index's tuned ones. The set index is not tuned on its own rows: the K slots of a
        set sit close together, so tuning's perturbed-row queries (moved by the distance
        to the nearest other row, a sibling slot) judge it far harder than real queries,
        and the exact re-score only needs the candidates gathered."""
        if sets.ndim != 3 or sets.shape[0] != len(entries):
            raise SetRowsError(f"expected ({len(entries)}, K, dim) set vectors, got {sets.shape}")
        rows = np.ascontiguousarray(sets.reshape(-1, sets.shape[2]), dtype=np.float32)
        np.save(directory / SET_VECTORS_FILE, rows)
        return cls.index_written(directory, entries, int(sets.shape[1]), factory, knobs)

    @classmethod
    def index_written(
        cls,
        directory: Path,
        entries: Sequence[tuple[str, str]],
        slots: int,
        factory: str = "Flat",
        knobs: Mapping[str, int] | None = None,
        heads: str | None = None,
    ) -> SetRows:
        """Index the rows already in ``directory``'s ``set_vectors.npy`` (a build spools
        them there as it encodes) and write ``set_rows.json``; see :meth:`write`.
        ``heads``: the digest of the set heads that made them (so later builds may copy
        them, :mod:`index.set_reuse`)."""
        rows = np.load(directory / SET_VECTORS_FILE, mmap_mode="r")
        means = set_means(rows, slots)
        index = VectorIndex.create(rows.shape[1], factory)
        if index.needs_training:
            index.train(means[:_MAX_TRAINING_ROWS])
        add_rows(index, means)  # one call for HNSW: FAISS builds a worse graph from chunks
        knobs = {name: int(value) for name, value in (knobs or {}).items()}
        _apply_knobs(index, knobs)
        index.save(directory / SET_INDEX_FILE)
        meta = {
            "slots": slots,
            "index": INDEXED_MEANS,
            "heads": heads,
            "knobs": knobs,
            "entries": [list(e) for e in entries],
        }
        atomic_write_text(directory / SET_ROWS_FILE, json.dumps(meta, ensure_ascii=False))
        return cls(entries, slots, rows, index)

    @classmethod
    def load(cls, directory: Path) -> SetRows | None:
        """The snapshot's set rows; None when it has none (built without a set head)."""
        if not (directory / SET_ROWS_FILE).is_file():
            return None
        try:
            meta = json.loads((directory / SET_ROWS_FILE).read_text(encoding="utf-8"))
            if meta.get("index") != INDEXED_MEANS:
                logger.warning(
                    "set rows in %s index every slot (an older layout): set search is off "
                    "for this snapshot until it is re-indexed",
                    directory,
                )
                return None
            entries = [(str(item_id), str(kind)) for item_id, kind in meta["entries"]]
            vectors = np.load(directory / SET_VECTORS_FILE, mmap_mode="r")
            index = VectorIndex.load(directory / SET_INDEX_FILE)
            _apply_knobs(index, meta.get("knobs", {}))
            return cls(entries, int(meta["slots"]), vectors, index)
        except (OSError, RuntimeError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise SetRowsError(f"set rows in {directory} cannot be loaded: {exc}") from exc

    def search(
        self,
        query_set: np.ndarray,
        k: int,
        exclude: Collection[str] = (),
        alpha: float = DEFAULT_ALPHA,
    ) -> list[SetHit]:
        """The k items whose best set is most smooth-Chamfer-similar to ``query_set``
        (Kq, dim), best first."""
        query = l2_normalize(as_matrix(query_set, self.dim))
        candidates = self.gather(query, k)
        if candidates.size == 0:
            return []
        scores = self.rescore(query, candidates, alpha)
        return self._best_per_item(candidates, scores, k, frozenset(exclude))

    def gather(self, query: np.ndarray, k: int) -> np.ndarray:
        """Sorted numbers of the sets whose means are nearest the (Kq, dim) unit query
        set's mean; each query vector probes when that mean is (near) zero."""
        fetch = min(self.index.ntotal, self.slots * (k + _FETCH_MARGIN))
        if fetch == 0:
            return np.empty((0,), np.int64)
        mean = query.mean(axis=0, keepdims=True)
        probes = l2_normalize(mean) if np.linalg.norm(mean) > 1e-6 else query
        _, found = self.index.search(probes, fetch)
        return np.unique(found[found >= 0])

    def rescore(self, query: np.ndarray, candidates: np.ndarray, alpha: float) -> np.ndarray:
        """Exact smooth-Chamfer of the query set and each candidate set."""
        sets = np.asarray(self.vectors[_set_rows(candidates, self.slots)], dtype=np.float32)
        return smooth_chamfer_scores(query, sets.reshape(-1, self.slots, self.dim), alpha)

    def _best_per_item(
        self, candidates: np.ndarray, scores: np.ndarray, k: int, exclude: frozenset[str]
    ) -> list[SetHit]:
        best: dict[str, SetHit] = {}
        for at in np.argsort(-scores, kind="stable"):
            item_id, kind = self.entries[int(candidates[at])]
            if item_id in exclude or item_id in best:
                continue
            best[item_id] = SetHit(item_id, float(scores[at]), kind)
            if len(best) == k:
                break
        return list(best.values())


def _apply_knobs(index: VectorIndex, knobs: Mapping[str, int]) -> None:
    unknown = set(knobs) - SET_KNOBS
    if unknown:
        raise SetRowsError(f"unknown set index knobs {sorted(unknown)}")
    for name, value in knobs.items():
        setattr(index, name, int(value))


def set_means(rows: np.ndarray, slots: int) -> np.ndarray:
    """(sets, dim) unit means of (sets x slots, dim) rows, each set's slots unit first;
    read a chunk of sets at a time so memory-mapped rows are never loaded whole."""
    n_sets, dim = rows.shape[0] // slots, rows.shape[1]
    means = np.empty((n_sets, dim), np.float32)
    for start in range(0, n_sets, _MEAN_CHUNK_SETS):
        stop = min(start + _MEAN_CHUNK_SETS, n_sets)
        chunk = l2_normalize(np.asarray(rows[start * slots : stop * slots]))
        means[start:stop] = l2_normalize(chunk.reshape(-1, slots, dim).mean(axis=1))
    return means


def _set_rows(sets: np.ndarray, slots: int) -> np.ndarray:
    """Row numbers of the given sets, each set's K rows in order."""
    return (sets[:, None] * slots + np.arange(slots)[None, :]).reshape(-1)
