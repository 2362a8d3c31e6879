"""FAISS wrapper: cosine (inner product on normalised vectors), filters inside the search.

Row ids are positions: the n-th vector added gets id n. There is no ``IDMap``,
so a FAISS id *is* a catalog row number and filters are plain row sets handed to
FAISS as an ``IDSelectorBitmap``, applied while searching (Flat, IVF and HNSW all
honour it), so a restrictive filter still yields k hits wherever k exist in the
probed part of the index.

IVF policy: training with fewer vectors than inverted lists is refused with a
``ValueError`` naming both numbers; the list count is never capped silently,
because the factory string recorded in a snapshot manifest must describe the
index that was really built.

GPU: :meth:`VectorIndex.enable_gpu` mirrors the index onto all GPUs. Filtered
searches always run on the CPU copy, since GPU indexes do not take every
``IDSelector`` / index type; unsupported index types stay CPU-only.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_NPROBE = 16
DEFAULT_EF_SEARCH = 64
# A filter rejects candidates HNSW has already paid to visit, so a filtered search keeps
# at least this beam even when the tuned efSearch (measured unfiltered) is smaller, and
# widens the tuned beam by 1 / (share of rows allowed), up to the cap: with the tuned
# beam alone a filter keeping 10 % of 100k rows found 0.85 of the true top 10.
FILTERED_MIN_EF_SEARCH = 64
FILTERED_MAX_EF_SEARCH = 1024
FACTORY_EXAMPLES = "'Flat', 'IVF1024,Flat', 'HNSW32', 'IVF1024,PQ16'"


class DimensionMismatchError(ValueError):
    """A vector's dimension differs from the index's."""

    def __init__(self, expected: int, got: int | tuple[int, ...]) -> None:
        super().__init__(f"vector dimension mismatch: expected {expected}, got {got}")
        self.expected = expected
        self.got = got


def as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (n, dim) matrix, or DimensionMismatchError."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise DimensionMismatchError(dim, matrix.shape[-1] if matrix.ndim else tuple(matrix.shape))
    return np.ascontiguousarray(matrix)


def _build_from_factory(dim: int, factory: str) -> faiss.Index:
    if dim <= 0:
        raise ValueError(f"index dimension must be positive, got {dim}")
    if "IDMap" in factory:
        raise ValueError(f"factory {factory!r}: IDMap is not allowed, ids must be row numbers")
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(
            f"invalid FAISS factory string {factory!r} for dim {dim} ({first_line}); "
            f"examples: {FACTORY_EXAMPLES}"
        ) from exc


class SearchableIndex(Protocol):
    """What a snapshot searches: a FAISS :class:`VectorIndex` or a Milvus collection
    (:class:`index.milvus_index.MilvusVectorIndex`), both keyed by catalog row number."""

    @property
    def dim(self) -> int: ...

    @property
    def ntotal(self) -> int: ...

    @property
    def is_exact(self) -> bool: ...

    def search(
        self, queries: np.ndarray, k: int, allowed_rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def reconstruct(self, rows: np.ndarray) -> np.ndarray: ...


class VectorIndex:
    """One FAISS index whose ids are insertion-order row numbers."""

    def __init__(self, index: faiss.Index, factory: str) -> None:
        self._cpu = index
        self._gpu: faiss.Index | None = None
        self.factory = factory
        self.nprobe = DEFAULT_NPROBE
        self.ef_search = DEFAULT_EF_SEARCH

    @classmethod
    def create(cls, dim: int, factory: str = "Flat") -> VectorIndex:
        """Empty index from a FAISS factory string; ValueError when it does not parse."""
        return cls(_build_from_factory(dim, factory), factory)

    @classmethod
    def load(cls, path: Path | str, factory: str | None = None) -> VectorIndex:
        """Read an index written by :meth:`save` (always a CPU index)."""
        index = faiss.read_index(str(path))
        return cls(index, factory or type(index).__name__)

    @property
    def faiss_index(self) -> faiss.Index:
        """The CPU index itself, for inspection (tuning reads its type and list count)."""
        return self._cpu

    @property
    def dim(self) -> int:
        return int(self._cpu.d)

    @property
    def ntotal(self) -> int:
        return int(self._cpu.ntotal)

    @property
    def needs_training(self) -> bool:
        return not self._cpu.is_trained

    @property
    def is_exact(self) -> bool:
        """True for flat indexes, whose results equal brute-force search."""
        return isinstance(faiss.downcast_index(self._cpu), faiss.IndexFlat)

    def train(self, vectors: np.ndarray) -> None:
        matrix = as_matrix(vectors, self.dim)
        ivf = faiss.try_extract_index_ivf(self._cpu)
        if ivf is not None and matrix.shape[0] < ivf.nlist:
            raise ValueError(
                f"{self.factory!r} has {ivf.nlist} inverted lists but only "
                f"{matrix.shape[0]} training vectors; use fewer lists or 'Flat'"
            )
        try:
            self._cpu.train(matrix)
        except RuntimeError as exc:
            raise ValueError(f"training {self.factory!r} failed: {exc}") from exc
        self._gpu = None

    def add(self, vectors: np.ndarray) -> None:
        """Append rows; they get ids ntotal .. ntotal + n - 1."""
        if self.needs_training:
            raise ValueError(f"{self.factory!r} must be trained before vectors are added")
        self._cpu.add(as_matrix(vectors, self.dim))
        self._gpu = None  # a stale mirror would miss the new rows

    def search(
        self, queries: np.ndarray, k: int, allowed_rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows), both (q, k); missing hits are row -1, score -inf.

        ``allowed_rows`` restricts the search to those row numbers, inside FAISS.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        matrix = as_matrix(queries, self.dim)
        selector = bitmap = None
        if allowed_rows is not None:
            if np.size(allowed_rows) == 0:
                return empty_result(matrix.shape[0], k)
            bitmap = self._row_bitmap(allowed_rows)  # must outlive the search: FAISS reads it
            selector = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))
        index = self._gpu if (self._gpu is not None and selector is None) else self._cpu
        share = 1.0 if allowed_rows is None else np.size(allowed_rows) / max(self.ntotal, 1)
        params = self._search_params(selector, share)
        scores, rows_found = index.search(matrix, k, params=params)
        del bitmap  # only now may the selector's bits go
        scores[rows_found < 0] = -np.inf
        return scores, rows_found

    def _row_bitmap(self, allowed_rows: np.ndarray) -> np.ndarray:
        """Packed membership bits over all rows: cheaper to build and test than a hash set."""
        member = np.zeros(self.ntotal, dtype=bool)
        rows = np.asarray(allowed_rows, dtype=np.int64)
        member[rows[(rows >= 0) & (rows < self.ntotal)]] = True
        return np.packbits(member, bitorder="little")

    def _search_params(
        self, selector: faiss.IDSelector | None, share: float = 1.0
    ) -> faiss.SearchParameters:
        params: faiss.SearchParameters
        if faiss.try_extract_index_ivf(self._cpu) is not None:
            ivf_params = faiss.SearchParametersIVF()
            ivf_params.nprobe = self.nprobe
            params = ivf_params
        elif isinstance(faiss.downcast_index(self._cpu), faiss.IndexHNSW):
            # SearchParametersHNSW exists at runtime but is missing from faiss's stub.
            hnsw_params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            hnsw_params.efSearch = (
                self.ef_search if selector is None else self._filtered_ef_search(share)
            )
            params = hnsw_params
        else:
            params = faiss.SearchParameters()
        params.sel = selector
        return params

    def _filtered_ef_search(self, share: float) -> int:
        widened = math.ceil(self.ef_search / max(share, 1e-6))
        return max(FILTERED_MIN_EF_SEARCH, min(widened, FILTERED_MAX_EF_SEARCH))

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """Stored vectors of ``rows`` (exact for Flat/HNSW-Flat; lossy for PQ)."""
        return self._cpu.reconstruct_batch(np.ascontiguousarray(rows, dtype=np.int64))

    def save(self, path: Path | str) -> None:
        """Write atomically: a temp file beside ``path``, fsync, then os.replace."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        faiss.write_index(self._cpu, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def enable_gpu(self) -> bool:
        """Mirror onto all GPUs when there are any; False (CPU only) otherwise."""
        if faiss.get_num_gpus() == 0 or not hasattr(faiss, "index_cpu_to_all_gpus"):
            return False
        try:
            self._gpu = faiss.index_cpu_to_all_gpus(self._cpu)
        except RuntimeError as exc:  # e.g. HNSW has no GPU implementation
            logger.warning("index %s stays on CPU: %s", self.factory, exc)
            return False
        return True


def empty_result(n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.full((n_queries, k), -np.inf, dtype=np.float32),
        np.full((n_queries, k), -1, dtype=np.int64),
    )


def add_rows(index: VectorIndex, vectors: np.ndarray, chunk_rows: int = 65_536) -> None:
    """All of ``vectors`` into ``index``, a chunk of rows at a time so a memory-mapped
    catalog is never copied whole, except into an HNSW graph: FAISS built a much worse
    graph from chunks. At 100k clustered 384-d rows, HNSW32 added as 65,536 + 34,464
    rows found 0.929 of the true top-10 of new queries at efSearch 64 (0.943 at 256),
    added in one call 0.983 (0.992); see docs/index_choice.md. HNSW keeps a full copy of
    the vectors anyway, so the one-call copy costs no more than the index itself."""
    graph = isinstance(faiss.downcast_index(index.faiss_index), faiss.IndexHNSW)
    step = max(vectors.shape[0], 1) if graph else chunk_rows
    for start in range(0, vectors.shape[0], step):
        index.add(np.asarray(vectors[start : start + step]))
