"""Set search (DivE, K vectors per item) against single-vector search at 100k items.

One run builds a real snapshot of N items (one 384-d row each, ``auto`` factory,
tuned as a build tunes it) and adds K set rows per item beside it (their own index
over each set's mean, ``auto`` factory on N means, searched with the main index's
tuned knobs), then times, interleaved, query by query: ``Snapshot.search`` with one
vector and ``Snapshot.search_sets`` with a set of K (one probe with the query set's
mean, exact smooth-Chamfer re-score), k = 10, at the main index's efSearch and at lower
ones for the set index. It reports the medians, their ratio, set search's recall@10
against the exhaustive smooth-Chamfer top 10 (first 50 queries), the median of each
stage of a set search (probe, re-score, the rest) and the bytes on disk.

Vectors are synthetic: clustered points (a 48-d latent space projected to 384-d plus
noise, as scripts/bench_index_choice.py draws them); an item's K slots are its
vector plus noise, renormalised, as a set head's residual slots sit around the
global vector. Queries are fresh points of the same distribution.

Usage: OMP_NUM_THREADS=1 python scripts/bench_set_search.py [--items 100000] [--slots 4]
       [--queries 300] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import torch

from index.autotune import AUTO, TuningPolicy, resolve_factory
from index.build import build_snapshot
from index.set_search import SetRows, set_kind
from index.snapshot import Snapshot, load_current
from models.encoders.base import l2_normalize
from models.set_similarity import DEFAULT_ALPHA, smooth_chamfer
from models.types import CatalogRecord

DIM = 384
LATENT_DIM = 48
RECALL_QUERIES = 50
SET_EF_SEARCH = (48, 24)  # besides the main index's tuned efSearch
SLOT_NOISE = 0.5  # per-coordinate noise of a slot around its item, relative to 1/sqrt(DIM)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


class Clustered:
    def __init__(self, n_clusters: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.standard_normal((n_clusters, LATENT_DIM)).astype(np.float32)
        self.projection = self.rng.standard_normal((LATENT_DIM, DIM)).astype(np.float32)

    def draw(self, n: int) -> np.ndarray:
        latent = self.centres[self.rng.integers(0, len(self.centres), n)]
        latent = latent + self.rng.standard_normal((n, LATENT_DIM)).astype(np.float32)
        noise = LATENT_DIM**0.5 * self.rng.standard_normal((n, DIM)).astype(np.float32)
        return unit(latent @ self.projection + noise)

    def slots(self, vectors: np.ndarray, k: int) -> np.ndarray:
        noise = self.rng.standard_normal((len(vectors), k, DIM)).astype(np.float32)
        return unit(vectors[:, None, :] + SLOT_NOISE * noise / DIM**0.5 * 4)


class LookupEncoder:
    """Texts are row numbers into precomputed vectors: the build pipeline, no model."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    dim = DIM
    fingerprint = "bench-set-search"
    device = "cpu"

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.vectors[[int(t) for t in texts]]

    def encode_images(self, images: Sequence[object]) -> np.ndarray:
        raise NotImplementedError

    def encode_recipes(self, recipes: Sequence[object]) -> np.ndarray:
        raise NotImplementedError


def exact_top10(vectors: np.ndarray, slots: int, query_sets: np.ndarray) -> list[list[int]]:
    """The oracle: each query set's 10 best item sets by smooth-Chamfer over all of them."""
    sets = torch.from_numpy(np.array(vectors).reshape(-1, slots, DIM))
    return [
        torch.topk(smooth_chamfer(torch.from_numpy(q), sets), 10).indices.tolist()
        for q in query_sets
    ]


def timed(snap: Snapshot, queries: np.ndarray, query_sets: np.ndarray, truth: list[list[int]]):  # type: ignore[no-untyped-def]
    """Single and set search timed query by query, interleaved; set recall@10 against the
    exhaustive smooth-Chamfer top 10 on the first queries."""
    single, sets, found = [], [], []
    for i, (query, query_set) in enumerate(zip(queries, query_sets, strict=True)):
        start = time.perf_counter()
        snap.search(query, 10)
        single.append(time.perf_counter() - start)
        start = time.perf_counter()
        matches = snap.search_sets(query_set, 10)
        sets.append(time.perf_counter() - start)
        if i < len(truth):
            hits = {int(m.item_id.removeprefix("item-")) for m in matches}
            found.append(len(hits & set(truth[i])) / 10)
    return {
        "single_p50_ms": round(1000 * statistics.median(single), 3),
        "set_p50_ms": round(1000 * statistics.median(sets), 3),
        "set_over_single": round(statistics.median(sets) / statistics.median(single), 2),
        "set_recall_at_10": round(float(np.mean(found)), 3),
    }


def stages(snap: Snapshot, query_sets: np.ndarray, set_p50_ms: float) -> dict[str, float]:
    """Median ms of a set search's stages, each timed in a pass of its own over the
    queries (so no stage runs on caches the one before warmed for the same query): the
    index probe (gather), the exact re-score of the gathered sets, and the rest (best
    set per item, catalog look-up, checks) as the whole search's median less those two."""
    sets = snap.sets
    assert sets is not None
    queries = [l2_normalize(query_set) for query_set in query_sets]
    probe, rescore, gathered = [], [], []
    for query in queries:
        start = time.perf_counter()
        gathered.append(sets.gather(query, 10))
        probe.append(time.perf_counter() - start)
    for query, candidates in zip(queries, gathered, strict=True):
        start = time.perf_counter()
        sets.rescore(query, candidates, DEFAULT_ALPHA)
        rescore.append(time.perf_counter() - start)
    probe_ms, rescore_ms = (1000 * statistics.median(times) for times in (probe, rescore))
    return {
        "probe_ms": round(probe_ms, 3),
        "rescore_ms": round(rescore_ms, 3),
        "rest_ms": round(set_p50_ms - probe_ms - rescore_ms, 3),
        "candidates_p50": int(statistics.median(len(c) for c in gathered)),
    }


def bytes_of(directory: Path, names: Sequence[str]) -> int:
    return sum((directory / name).stat().st_size for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)  # one query at a time: threads only contend on 2 shared cores
    source = Clustered(max(10, args.items // 100))
    vectors = source.draw(args.items)
    records = (CatalogRecord(id=f"item-{i}", texts=(str(i),)) for i in range(args.items))
    policy = TuningPolicy()
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = Path(tmp)
        start = time.perf_counter()
        manifest = build_snapshot(records, LookupEncoder(vectors), index_dir, batch_size=4096)
        build_s = time.perf_counter() - start
        snapshot_dir = index_dir / manifest.version
        set_factory = resolve_factory(AUTO, args.items, DIM, policy)  # one mean per set
        start = time.perf_counter()
        entries = [(f"item-{i}", set_kind("text")) for i in range(args.items)]
        knobs = {"ef_search": manifest.ef_search} if manifest.ef_search else {}
        SetRows.write(snapshot_dir, entries, source.slots(vectors, args.slots), set_factory, knobs)
        set_build_s = time.perf_counter() - start
        snap = load_current(index_dir)
        assert snap.sets is not None
        queries = source.draw(args.queries)
        query_sets = source.slots(queries, args.slots)
        truth = exact_top10(snap.sets.vectors, args.slots, query_sets[:RECALL_QUERIES])
        rounds = []
        for ef in sorted({int(manifest.ef_search or 0), *SET_EF_SEARCH} - {0}, reverse=True):
            snap.sets.index.ef_search = ef
            times = timed(snap, queries, query_sets, truth)
            parts = stages(snap, query_sets, times["set_p50_ms"])
            rounds.append({"set_ef_search": ef, **times, **parts})
        single_bytes = bytes_of(snapshot_dir, ["index.faiss", "vectors.npy"])
        set_bytes = bytes_of(snapshot_dir, ["set_index.faiss", "set_vectors.npy", "set_rows.json"])
        report = {
            "items": args.items,
            "slots": args.slots,
            "queries": args.queries,
            "single_factory": manifest.factory,
            "single_ef_search": manifest.ef_search,
            "set_factory": set_factory,
            "rounds": rounds,
            "single_index_mb": round(single_bytes / 2**20, 1),
            "set_rows_mb": round(set_bytes / 2**20, 1),
            "size_ratio": round(set_bytes / single_bytes, 2),
            "build_s": round(build_s, 1),
            "set_build_s": round(set_build_s, 1),
        }
        snap.close()
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
