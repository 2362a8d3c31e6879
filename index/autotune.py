"""An index fitted to the catalog: the factory chosen by size, search knobs tuned to recall.

``auto`` picks exact search (``Flat``) while the catalog is small enough to scan,
``HNSW32`` above that, and an IVF index with an HNSW coarse quantiser and SQ8
codes from :data:`IVF_MIN_VECTORS` on, where HNSW's memory (full vectors plus
links) stops being reasonable.

Whatever the factory, the search knob (HNSW ``efSearch``, IVF ``nprobe``) is set
at build time to the smallest rung of a ladder whose recall@10 reaches the
target, measured against exact search on queries drawn from the catalog's own
vectors, slightly perturbed so a query is not trivially its own neighbour at
distance 0. A rung reaches the target when the lower confidence bound of its
recall does, not its mean: the mean over 1,000 queries is itself an estimate
(standard error about 0.003-0.005 near 0.95), and a rung picked because its mean
just touched the target gives less than the target to about half of all query
samples. The chosen knob and the measured recall go into the manifest, and the
snapshot applies the knob when it is loaded for serving.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import faiss
import numpy as np

from index.vector_index import VectorIndex

logger = logging.getLogger(__name__)

AUTO = "auto"
DEFAULT_FLAT_MAX_VECTORS = 20_000
DEFAULT_TARGET_RECALL = 0.95
REFERENCE_DIM = 384  # DEFAULT_FLAT_MAX_VECTORS is counted in vectors of this size
IVF_MIN_VECTORS = 2_000_000
RECALL_K = 10
EF_SEARCH_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
NPROBE_LADDER = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# How far a tuning query moves from its catalog row, in units of that row's distance to
# its nearest other row. A fixed step misjudged one data set or another: noise of norm
# 0.2 overstated the recall of out-of-catalog queries (0.956 recorded, 0.877 real at
# 100k), 0.8 understated it on tighter clusters (0.939 at efSearch 512 where new draws
# from the same clusters got 0.99). See docs/index_choice.md.
QUERY_NOISE = 1.0
# One-sided 95 % normal quantile: a rung is chosen when mean recall minus this many
# standard errors of the mean reaches the target (see _recall_lower_bound).
CONFIDENCE_Z = 1.645
_EXACT_CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class TuningPolicy:
    """How ``auto`` chooses and how far the knobs are turned (MMSEARCH_* settings)."""

    flat_max_vectors: int = DEFAULT_FLAT_MAX_VECTORS
    target_recall: float = DEFAULT_TARGET_RECALL
    n_queries: int = 1000
    seed: int = 0
    query_noise: float = QUERY_NOISE

    def __post_init__(self) -> None:
        if self.flat_max_vectors < 0:
            raise ValueError(f"flat_max_vectors must be >= 0, got {self.flat_max_vectors}")
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall}")
        if self.n_queries < 1:
            raise ValueError(f"n_queries must be positive, got {self.n_queries}")
        if self.query_noise < 0:
            raise ValueError(f"query_noise must be >= 0, got {self.query_noise}")


@dataclass(frozen=True)
class Tuning:
    """What tuning chose and measured; None knobs: the index has no such knob."""

    ef_search: int | None
    nprobe: int | None
    recall_at_10: float
    target_recall: float
    recall_queries: int  # 0: not measured, the index is exact
    # One-sided 95 % lower confidence bound of recall_at_10 (what reached the target).
    recall_lower_bound: float = 1.0


# --------------------------------------------------------------------------- factory choice


def choose_factory(n_vectors: int, dim: int, flat_max_vectors: int) -> str:
    """Flat while n_vectors x dim fits the budget, then HNSW32, then IVF-HNSW with SQ8.

    SQ8, not PQ: one byte per dimension (4x under float32) and nothing to cluster per
    sub-vector. PQ's codebooks took minutes to train on 20k vectors on this CPU
    (IVF64_HNSW32,PQ192np: 246 s) where IVF1024,SQ8 trained on 200k in 17 s.
    """
    flat_budget = flat_max_vectors * REFERENCE_DIM
    if n_vectors * dim <= flat_budget:
        return "Flat"
    if n_vectors < IVF_MIN_VECTORS:
        return "HNSW32"
    return f"IVF{ivf_list_count(n_vectors)}_HNSW32,SQ8"


def ivf_list_count(n_vectors: int) -> int:
    """About 4 sqrt(N) inverted lists, rounded to the nearest power of two."""
    return 2 ** round(math.log2(4 * math.sqrt(n_vectors)))


def resolve_factory(factory: str, n_vectors: int, dim: int, policy: TuningPolicy) -> str:
    return choose_factory(n_vectors, dim, policy.flat_max_vectors) if factory == AUTO else factory


def check_factory(dim: int, factory: str) -> None:
    """ValueError for a factory string that cannot build; ``auto`` always can."""
    if factory != AUTO:
        VectorIndex.create(dim, factory)


# --------------------------------------------------------------------------- tuning


def tune(index: VectorIndex, vectors: np.ndarray, policy: TuningPolicy) -> Tuning:
    """Set ``index``'s knob to the smallest rung reaching the target recall; report it.

    ``vectors``: the rows ``index`` holds, in order (may be memory-mapped).
    """
    knob, ladder = _knob_and_ladder(index)
    if knob is None:
        if index.is_exact:
            return exact_tuning(policy)
        ladder = (0,)  # no knob (e.g. plain PQ): measure what there is
    queries = perturbed_queries(vectors, policy.n_queries, policy.seed, policy.query_noise)
    truth = exact_top_k(vectors, queries, min(RECALL_K, index.ntotal))
    rung, per_query = _climb(index, knob, ladder, queries, truth, policy.target_recall)
    return Tuning(
        ef_search=rung if knob == "ef_search" else None,
        nprobe=rung if knob == "nprobe" else None,
        recall_at_10=round(float(per_query.mean()), 4),
        target_recall=policy.target_recall,
        recall_queries=int(queries.shape[0]),
        recall_lower_bound=round(_recall_lower_bound(per_query), 4),
    )


def exact_tuning(policy: TuningPolicy) -> Tuning:
    """What an exact index records: recall 1.0, no knob tuned, nothing measured."""
    return Tuning(None, None, 1.0, policy.target_recall, 0)


def _climb(
    index: VectorIndex,
    knob: str | None,
    ladder: tuple[int, ...],
    queries: np.ndarray,
    truth: np.ndarray,
    target: float,
) -> tuple[int, np.ndarray]:
    """The first rung whose recall's lower confidence bound reaches ``target`` (else the
    top one), and each query's recall there; the index is left set to it."""
    rung, per_query = ladder[0], np.zeros(1)
    for rung in ladder:
        if knob is not None:
            setattr(index, knob, rung)
        per_query = per_query_recall(index.search(queries, truth.shape[1])[1], truth)
        if _recall_lower_bound(per_query) >= target:
            return rung, per_query
    logger.warning(
        "%s reaches recall@10 %.3f at most (%s=%s), under the target %.2f",
        index.factory,
        per_query.mean(),
        knob,
        rung,
        target,
    )
    return rung, per_query


def _recall_lower_bound(per_query: np.ndarray) -> float:
    """One-sided 95 % lower confidence bound of the mean recall over all such queries.

    The normal approximation holds for the sample sizes tuning uses (hundreds of
    queries); a perfect sample (every query recall 1.0) has no spread and keeps 1.0.
    """
    if per_query.size < 2:
        return float(per_query.mean())
    standard_error = per_query.std(ddof=1) / math.sqrt(per_query.size)
    return float(per_query.mean() - CONFIDENCE_Z * standard_error)


def _knob_and_ladder(index: VectorIndex) -> tuple[str | None, tuple[int, ...]]:
    ivf = faiss.try_extract_index_ivf(index.faiss_index)
    if ivf is not None:  # probing every list is exact search over the codes: stop there
        lower = tuple(n for n in NPROBE_LADDER if n < ivf.nlist)
        return "nprobe", lower + ((ivf.nlist,) if ivf.nlist <= NPROBE_LADDER[-1] else ())
    if isinstance(faiss.downcast_index(index.faiss_index), faiss.IndexHNSW):
        return "ef_search", EF_SEARCH_LADDER
    return None, ()


def perturbed_queries(
    vectors: np.ndarray, n_queries: int, seed: int, noise: float = QUERY_NOISE
) -> np.ndarray:
    """Up to ``n_queries`` distinct catalog rows, each moved in a random direction by
    ``noise`` times its distance to its nearest other row, renormalised.

    The step scales with the catalog's own density: a query drawn like the catalog lies
    about one nearest-neighbour distance from the closest row, however tight or loose
    the clusters are, where a fixed step is too easy on loose data and too hard on
    tight data.
    """
    rng = np.random.default_rng(seed)
    n_rows, dim = vectors.shape
    rows = np.sort(rng.choice(n_rows, size=min(n_queries, n_rows), replace=False))
    base = np.asarray(vectors[rows], dtype=np.float32)
    direction = rng.standard_normal(base.shape).astype(np.float32)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    noisy = base + direction * (noise * _nearest_other_distance(vectors, base, rows))[:, None]
    return np.ascontiguousarray(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))


def _nearest_other_distance(vectors: np.ndarray, base: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Euclidean distance from each ``base`` row (catalog row ``rows[i]``) to its
    nearest other catalog row; 0 for a catalog of one row."""
    if vectors.shape[0] < 2:
        return np.zeros(base.shape[0], dtype=np.float32)
    top = exact_top_k(vectors, base, 2)
    nearest = np.where(top[:, 0] == rows, top[:, 1], top[:, 0])  # skip the row itself
    neighbours = np.asarray(vectors[nearest], dtype=np.float32)
    return np.linalg.norm(base - neighbours, axis=1).astype(np.float32)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(q, k) rows of the true top-k by inner product, a chunk of rows at a time so a
    memory-mapped catalog is never copied whole."""
    best_scores = np.full((queries.shape[0], 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((queries.shape[0], 0), dtype=np.int64)
    for start in range(0, vectors.shape[0], _EXACT_CHUNK_ROWS):
        chunk = faiss.IndexFlatIP(vectors.shape[1])
        chunk.add(np.ascontiguousarray(vectors[start : start + _EXACT_CHUNK_ROWS], np.float32))
        scores, rows = chunk.search(queries, min(k, chunk.ntotal))
        best_scores = np.hstack([best_scores, scores])
        best_rows = np.hstack([best_rows, rows + start])
        order = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        best_rows = np.take_along_axis(best_rows, order, axis=1)
    return best_rows


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true top-k rows found in the returned top-k, over all queries."""
    return float(per_query_recall(found, truth).mean())


def per_query_recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each query's share of its true top-k rows found in its returned top-k."""
    hits = [len(set(f[f >= 0]) & set(t)) for f, t in zip(found, truth, strict=True)]
    return np.asarray(hits, dtype=np.float64) / truth.shape[1]
