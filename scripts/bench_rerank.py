"""What re-ranking the top of a search costs: /search with and without "rerank", one run.

    .venv/bin/python scripts/bench_rerank.py --top 50 --repeats 5

Copies the shipped food-v1 bundle into a temporary folder and adds a seeded
*random-init* SGRAF to the copy (the cost of a forward pass does not depend on the
weights; its scores mean nothing). It indexes the kfood sample with that bundle
and sends the same text queries to the in-process app (FastAPI TestClient, no
network) with and without ``"rerank": {"model": "sgraf", "top": N}``. It prints
the median latency of each and the median of the difference per query, and the
parts of the added cost measured on their own: the query's word n-grams through
the encoder, fetching the candidates' rows, the SGRAF forward pass.

The machine is shared and noisy: run it when it is quiet, and read the medians.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi.testclient import TestClient

from index.build import build_snapshot
from index.snapshot import load_current
from models.bundle import load_bundle, write_sgraf
from models.datasets import open_dataset
from models.registry import shipped_model_dir
from models.rerank import SetFeatures, rerankers_of, word_ngrams
from models.sgraf import Sgraf, SgrafConfig
from service.app import create_app
from service.reranking import candidate_features
from service.settings import Settings

QUERIES = [
    "spicy pork stew",
    "김치찌개",
    "grilled fish with rice",
    "매운 떡볶이",
    "cold noodles in broth",
    "된장찌개 두부",
    "stir-fried squid",
    "sweet rice cake dessert",
    "beef bulgogi with vegetables",
    "계란말이",
]


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def wait_until_ready(client: TestClient, timeout_s: float = 300.0) -> None:
    """The app loads its model in the background; /readyz says when it is done."""
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not become ready")
        time.sleep(0.5)


def bundle_with_sgraf(root: Path, config: SgrafConfig) -> Path:
    out = root / "food-v1-sgraf"
    shutil.copytree(shipped_model_dir("food-v1"), out)
    torch.manual_seed(0)
    write_sgraf(out, Sgraf(config))
    return out


def http_latencies(client: TestClient, top: int, repeats: int) -> dict[str, float]:
    def search(text: str, rerank: bool) -> None:
        body: dict[str, Any] = {"query": {"text": text}, "k": 10, "top_classes": 0}
        if rerank:
            body["rerank"] = {"model": "sgraf", "top": top}
        response = client.post("/search", json=body)
        assert response.status_code == 200, response.text

    for text in QUERIES:  # warm-up: first calls build caches and thread pools
        search(text, True)
    plain = [median_ms(lambda t=t: search(t, False), repeats) for t in QUERIES]
    reranked = [median_ms(lambda t=t: search(t, True), repeats) for t in QUERIES]
    return {
        "search_ms_p50": statistics.median(plain),
        "search_rerank_ms_p50": statistics.median(reranked),
        "added_ms_p50": statistics.median(r - p for r, p in zip(reranked, plain, strict=True)),
    }


def part_latencies(bundle: Path, index_dir: Path, top: int, repeats: int) -> dict[str, float]:
    encoder = load_bundle(bundle, "cpu")
    reranker = rerankers_of(encoder)["sgraf"]
    snapshot = load_current(index_dir)
    text = QUERIES[0]
    vector = encoder.encode_texts([text])
    ids = [m.item_id for m in snapshot.search(vector[0], top)]
    query = SetFeatures(encoder.encode_texts(word_ngrams(text)), vector[0])
    candidates = [candidate_features(snapshot, item_id) for item_id in ids]
    return {
        "ngrams_ms_p50": median_ms(lambda: encoder.encode_texts(word_ngrams(text)), repeats * 4),
        "candidate_rows_ms_p50": median_ms(
            lambda: [candidate_features(snapshot, i) for i in ids], repeats * 4
        ),
        "sgraf_ms_p50": median_ms(lambda: reranker.score(query, candidates), repeats * 4),
        "query_parts": len(query.parts),
        "rows_per_candidate": float(np.mean([len(c.parts) for c in candidates])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/kfood"))
    parser.add_argument("--top", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sim-dim", type=int, default=SgrafConfig(dim=1).sim_dim)
    parser.add_argument("--steps", type=int, default=SgrafConfig(dim=1).steps)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = bundle_with_sgraf(
            root, SgrafConfig(dim=384, sim_dim=args.sim_dim, steps=args.steps)
        )
        index_dir = root / "index"
        encoder = load_bundle(bundle, "cpu")
        build_snapshot(open_dataset(args.data, "kfood"), encoder, index_dir)
        del encoder
        settings = Settings(
            model=f"bundle:{bundle}", device="cpu", index_dir=index_dir, redis_url=None
        )
        with TestClient(create_app(settings)) as client:
            wait_until_ready(client)
            figures = http_latencies(client, args.top, args.repeats)
        figures |= part_latencies(bundle, index_dir, args.top, args.repeats)
    figures |= {
        "top": args.top,
        "sim_dim": args.sim_dim,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
