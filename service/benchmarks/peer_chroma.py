"""The peer in the serving benchmark: chromadb's own HTTP server on the same vectors.

Runs in a virtual environment that has chromadb (kept out of this project's
dependencies), for example::

    python3 -m venv /tmp/chromavenv && /tmp/chromavenv/bin/pip install chromadb
    /tmp/chromavenv/bin/python service/benchmarks/peer_chroma.py --vectors v.npy --queries q.npy \\
        --truth t.npy --ef-search 16 64 128

It starts ``chroma run`` on a fresh folder, adds the vectors (inner product, HNSW with
32 neighbours, as the service's HNSW32), then for each ``ef_search`` measures
recall@10 against ``--truth`` (exact top-10 row numbers) and the query rate at each
concurrency, one query per request. Prints one JSON object. No import from this
project: it must run in chromadb's environment alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

K = 10


def start_server(chroma_bin: str, folder: Path, port: int) -> subprocess.Popen[bytes]:
    command = [chroma_bin, "run", "--path", str(folder), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import chromadb

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
            return server
        except Exception:  # not up yet: chromadb raises several kinds here
            time.sleep(0.3)
    server.kill()
    raise RuntimeError("chroma did not start")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def load(client: Any, vectors: np.ndarray) -> tuple[Any, float]:
    hnsw = {"space": "ip", "max_neighbors": 32, "ef_construction": 200, "ef_search": 64}
    collection = client.create_collection("bench", configuration={"hnsw": hnsw})
    batch = client.get_max_batch_size()
    started = time.perf_counter()
    for start in range(0, len(vectors), batch):
        rows = vectors[start : start + batch]
        collection.add(ids=[str(start + i) for i in range(len(rows))], embeddings=rows)
    return collection, time.perf_counter() - started


def recall(collection: Any, queries: np.ndarray, truth: np.ndarray) -> float:
    hits = 0
    for query, expected in zip(queries, truth, strict=True):
        found = collection.query(query_embeddings=query[None], n_results=K, include=[])
        hits += len({int(i) for i in found["ids"][0]} & {int(i) for i in expected[:K]})
    return round(hits / (K * len(queries)), 4)


def rate(collection: Any, queries: np.ndarray, concurrency: int) -> dict[str, float]:
    def one(query: np.ndarray) -> float:
        started = time.perf_counter()
        collection.query(query_embeddings=query[None], n_results=K, include=["distances"])
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        times = sorted(pool.map(one, queries))
    seconds = time.perf_counter() - started
    return {
        "qps": round(len(queries) / seconds, 1),
        "p50_ms": round(1000 * statistics.median(times), 2),
        "p99_ms": round(1000 * times[int(0.99 * (len(times) - 1))], 2),
    }


def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import chromadb

    vectors = np.load(args.vectors).astype(np.float32)
    queries = np.load(args.queries).astype(np.float32)
    truth = np.load(args.truth)
    server = start_server(args.chroma_bin, folder, args.port)
    try:
        client = chromadb.HttpClient(host="127.0.0.1", port=args.port)
        collection, build_s = load(client, vectors)
        result: dict[str, Any] = {
            "engine": f"chromadb {chromadb.__version__}",
            "vectors": len(vectors),
            "build_s": round(build_s, 1),
            "server_rss_mib": rss_mib(server.pid),
            "settings": [],
        }
        for ef_search in args.ef_search:
            collection.modify(configuration={"hnsw": {"ef_search": ef_search}})
            row: dict[str, Any] = {
                "ef_search": ef_search,
                "recall_at_10": recall(collection, queries, truth),
            }
            for concurrency in args.concurrency:
                row[f"c{concurrency}"] = rate(collection, queries, concurrency)
            result["settings"].append(row)
        return result
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", type=Path, required=True, help="(n, dim) float32 .npy")
    parser.add_argument("--queries", type=Path, required=True, help="(q, dim) float32 .npy")
    parser.add_argument("--truth", type=Path, required=True, help="(q, >=10) exact row ids .npy")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument(
        "--chroma-bin",
        default=shutil.which("chroma") or str(Path(sys.executable).with_name("chroma")),
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(measure(args, Path(folder))))  # noqa: T201 (the one output)


if __name__ == "__main__":
    main()
