"""FAISS against Milvus Lite as the vector index (issue #16): build time, search latency
(median, p99) and recall@10, without a filter and with one keeping a share of the rows.

Three indexes over the same clustered 384-d vectors (``bench_index_choice``'s source):
FAISS ``Flat``, FAISS ``HNSW32`` tuned as a re-index tunes it (``auto`` picks it above
20k vectors), and a Milvus Lite FLAT collection, built as a Milvus snapshot builds it
(:class:`index.milvus_index.MilvusStore`, insert + flush + load). Queries are fresh
points of the same distribution, one at a time, k=10, through each index's ``search``,
the call the snapshot makes; a filter is a random set of allowed rows, as the SQLite
catalog hands it over (FAISS: a bitmap selector; Milvus: a ``row in [...]`` expression).
Recall is against exact search over the allowed rows.

Usage: OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/bench_milvus.py [--n 100000]
       [--queries 200] [--filter-share 0.1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from index.autotune import TuningPolicy, exact_top_k, recall_at_k, tune
from index.milvus_index import MilvusStore
from index.vector_index import SearchableIndex, VectorIndex
from scripts.bench_index_choice import DIM, ClusteredSource

K = 10


def timed(build: Callable[[], SearchableIndex]) -> tuple[SearchableIndex, float]:
    start = time.perf_counter()
    index = build()
    return index, time.perf_counter() - start


def faiss_index(rows: np.ndarray, factory: str) -> VectorIndex:
    index = VectorIndex.create(DIM, factory)
    index.add(rows)
    if factory != "Flat":
        tune(index, rows, TuningPolicy())
    return index


def search_figures(
    index: SearchableIndex, queries: np.ndarray, truth: np.ndarray, allowed: np.ndarray | None
) -> dict[str, float]:
    timings, found = [], []
    for query in queries:
        start = time.perf_counter()
        _, rows = index.search(query, K, allowed)
        timings.append(time.perf_counter() - start)
        found.append(rows[0])
    ms = 1000 * np.asarray(timings)
    return {
        "p50_ms": round(float(np.median(ms)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "recall_at_10": round(recall_at_k(np.asarray(found), truth), 4),
    }


def measure(n: int, n_queries: int, filter_share: float, milvus_uri: str) -> list[dict]:
    source = ClusteredSource(max(10, n // 100))
    rows, queries = source.draw(n), source.draw(n_queries)
    allowed = np.sort(np.random.default_rng(1).choice(n, int(n * filter_share), replace=False))
    truth = exact_top_k(rows, queries, K)
    filtered_truth = allowed[exact_top_k(rows[allowed], queries, K)]
    store = MilvusStore(milvus_uri)
    _, connect_s = timed(lambda: store.client)  # pymilvus import, Milvus Lite start-up
    print(json.dumps({"milvus_lite_connect_s": round(connect_s, 2)}), flush=True)
    builds: dict[str, Callable[[], SearchableIndex]] = {
        "FAISS Flat": lambda: faiss_index(rows, "Flat"),
        "FAISS HNSW32 (tuned)": lambda: faiss_index(rows, "HNSW32"),
        "Milvus Lite FLAT": lambda: store.create("bench", rows),
    }
    results = []
    for name, build in builds.items():
        index, build_s = timed(build)
        plain = search_figures(index, queries, truth, None)
        filtered = search_figures(index, queries, filtered_truth, allowed)
        results.append({"index": name, "n": n, "build_s": round(build_s, 2), "plain": plain,
                        "filtered": filtered, "filter_share": filter_share})  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
    return results


def markdown(results: list[dict]) -> str:
    lines = [
        "| index | build s | p50 / p99 ms | recall@10 | filtered p50 / p99 ms "
        "| filtered recall@10 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        plain, filtered = r["plain"], r["filtered"]
        lines.append(
            f"| {r['index']} | {r['build_s']} | {plain['p50_ms']} / {plain['p99_ms']} | "
            f"{plain['recall_at_10']} | {filtered['p50_ms']} / {filtered['p99_ms']} | "
            f"{filtered['recall_at_10']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--filter-share", type=float, default=0.1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        results = measure(args.n, args.queries, args.filter_share, f"{folder}/bench.db")
    print(markdown(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
