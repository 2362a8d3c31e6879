"""Flat against tuned HNSW32 on clustered 384-d vectors (issue #17, item 3).

For each catalog size: what ``auto`` chooses; Flat's build time and p50 latency;
HNSW32's build time, tuning time, tuned efSearch, the recall tuning recorded and
the recall on held-out perturbed queries (another seed), and its p50 latency at
the tuned efSearch. Latency is one query at a time, k=10, through VectorIndex.

The vectors have a low intrinsic dimension, like real embeddings: clustered
points in a 48-d latent space, projected to 384-d, plus isotropic noise. Recall
is measured three ways: as tuning records it (perturbed catalog rows), on other
perturbed rows (another seed), and on fresh points of the same distribution
that are not in the catalog, the closest stand-in here for real queries.

Usage: OMP_NUM_THREADS=1 python scripts/bench_index_choice.py [--sizes 10000 20000 ...]
       [--target-recall 0.95] [--query-noise 1.0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import faiss
import numpy as np

from index.autotune import (
    QUERY_NOISE,
    TuningPolicy,
    choose_factory,
    exact_top_k,
    perturbed_queries,
    recall_at_k,
    tune,
)
from index.vector_index import VectorIndex

DIM = 384
LATENT_DIM = 48
CLUSTER_SPREAD = 1.0  # latent std around a centre whose coordinates have std 1
ISOTROPIC_NOISE = 1.0
LATENCY_QUERIES = 500


class ClusteredSource:
    """Points around n/100 cluster centres in a latent space, projected to DIM dims."""

    def __init__(self, n_clusters: int, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)
        self._centres = self._normal(n_clusters, LATENT_DIM)
        self._projection = self._normal(LATENT_DIM, DIM)

    def _normal(self, *shape: int) -> np.ndarray:
        return self._rng.standard_normal(shape).astype(np.float32)

    def draw(self, n: int) -> np.ndarray:
        picked = self._rng.integers(0, self._centres.shape[0], n)
        latent = self._centres[picked] + CLUSTER_SPREAD * self._normal(n, LATENT_DIM)
        # The projection scales latent norms by ~sqrt(LATENT_DIM); the noise matches it.
        noise = ISOTROPIC_NOISE * LATENT_DIM**0.5 * self._normal(n, DIM)
        rows = latent @ self._projection + noise
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def p50_latency_ms(index: VectorIndex, queries: np.ndarray) -> float:
    timings = []
    for query in queries[:LATENCY_QUERIES]:
        start = time.perf_counter()
        index.search(query, 10)
        timings.append(time.perf_counter() - start)
    return 1000 * statistics.median(timings)


def timed_build(rows: np.ndarray, factory: str) -> tuple[VectorIndex, float]:
    start = time.perf_counter()
    index = VectorIndex.create(DIM, factory)
    index.add(rows)
    return index, time.perf_counter() - start


def measure(n: int, policy: TuningPolicy) -> dict[str, object]:
    source = ClusteredSource(max(10, n // 100))
    rows, fresh = source.draw(n), source.draw(1000)
    held_out = perturbed_queries(rows, 1000, policy.seed + 1, policy.query_noise)
    flat, flat_build_s = timed_build(rows, "Flat")
    hnsw, hnsw_build_s = timed_build(rows, "HNSW32")
    start = time.perf_counter()
    tuning = tune(hnsw, rows, policy)
    tune_s = time.perf_counter() - start
    held_out_recall = recall_at_k(hnsw.search(held_out, 10)[1], exact_top_k(rows, held_out, 10))
    fresh_recall = recall_at_k(hnsw.search(fresh, 10)[1], exact_top_k(rows, fresh, 10))
    return {
        "n": n,
        "auto": choose_factory(n, DIM, policy.flat_max_vectors),
        "flat_build_s": round(flat_build_s, 2),
        "flat_p50_ms": round(p50_latency_ms(flat, fresh), 3),
        "hnsw_build_s": round(hnsw_build_s, 2),
        "hnsw_tune_s": round(tune_s, 2),
        "ef_search": tuning.ef_search,
        "recorded_recall": tuning.recall_at_10,
        "held_out_recall": round(held_out_recall, 4),
        "fresh_recall": round(fresh_recall, 4),
        "hnsw_p50_ms": round(p50_latency_ms(hnsw, fresh), 3),
    }


COLUMNS = (
    ("n", "vectors"),
    ("auto", "auto picks"),
    ("flat_p50_ms", "Flat p50 ms"),
    ("hnsw_p50_ms", "HNSW32 p50 ms"),
    ("ef_search", "tuned efSearch"),
    ("recorded_recall", "recall@10 recorded"),
    ("held_out_recall", "recall@10 held-out"),
    ("fresh_recall", "recall@10 fresh points"),
    ("hnsw_build_s", "HNSW build s"),
    ("hnsw_tune_s", "tune s"),
    ("flat_build_s", "Flat build s"),
)


def markdown(results: list[dict[str, object]]) -> str:
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + " --- |" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(str(r[key]) for key, _ in COLUMNS) + " |" for r in results]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 20_000, 50_000, 100_000])
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--query-noise", type=float, default=QUERY_NOISE)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    policy = TuningPolicy(target_recall=args.target_recall, query_noise=args.query_noise)
    results = []
    for n in args.sizes:
        results.append(measure(n, policy))
        print(json.dumps(results[-1]), flush=True)
    print(markdown(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
