"""Item changes on Milvus Lite: in place against a new collection per change (issue #16).

Builds ``--items`` text-only items (two captions each, 384-d, the tests' TinyEncoder:
hashed trigrams through a random projection, so encoding costs next to nothing) into
a Milvus Lite snapshot, then applies ``--rounds`` single-item changes (one upsert of
an existing item, as a PUT does) and reports the median time of an apply, and what
the collection holds afterwards. For comparison it times what every apply did before
changes went in place: inserting the whole snapshot into a new collection
(:meth:`index.milvus_index.MilvusStore.create`), and the same change on FAISS.

Usage: OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/bench_milvus_changes.py --items 10000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from index.backends import IndexBackend
from index.build import build_snapshot
from index.changes import ApplyOptions, ItemChange, apply_changes
from index.layout import read_current
from index.manifest import Manifest
from models.types import CatalogRecord
from tests.index.tiny_encoder import TinyEncoder

DIM = 384


def records(n: int) -> list[CatalogRecord]:
    return [
        CatalogRecord(f"item-{i}", texts=(f"dish {i} with rice", f"a plate of dish {i}"))
        for i in range(n)
    ]


def time_applies(index_dir: Path, backend: IndexBackend, rounds: int) -> list[float]:
    encoder, times = TinyEncoder(DIM), []
    for i in range(rounds):
        record = CatalogRecord(f"item-{i}", texts=(f"changed dish {i}, round {i}",))
        change = ItemChange(record.id, record, datetime.now(UTC))
        start = time.perf_counter()
        apply_changes(index_dir, encoder, [change], ApplyOptions(backend=backend, keep_older=1))
        times.append(time.perf_counter() - start)
    return times


def measure(n: int, rounds: int, workdir: Path) -> dict[str, object]:
    encoder = TinyEncoder(DIM)
    milvus = IndexBackend("milvus", str(workdir / "bench.db"))
    faiss_dir, milvus_dir = workdir / "faiss", workdir / "milvus"
    start = time.perf_counter()
    first = build_snapshot(records(n), encoder, milvus_dir, backend=milvus)
    build_s = time.perf_counter() - start
    build_snapshot(records(n), encoder, faiss_dir)
    in_place = time_applies(milvus_dir, milvus, rounds)
    on_faiss = time_applies(faiss_dir, IndexBackend(), rounds)
    live = Manifest.read(milvus_dir / str(read_current(milvus_dir)))
    assert milvus.milvus is not None and live.collection is not None
    vectors = np.load(milvus_dir / live.version / "vectors.npy")
    start = time.perf_counter()
    milvus.milvus.create("20000101T000000000Z-000000", vectors)  # the old way, once
    new_collection_s = time.perf_counter() - start
    return {
        "items": n,
        "vectors": int(first.n_vectors),
        "build_s": round(build_s, 2),
        "apply_in_place_median_s": round(statistics.median(in_place), 3),
        "apply_faiss_median_s": round(statistics.median(on_faiss), 3),
        "new_collection_insert_s": round(new_collection_s, 2),
        "collections_after": sorted(milvus.milvus.client.list_collections()),
        "rows_in_live_collection": milvus.milvus.count(live.collection),
        "live_vectors": live.n_vectors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        print(json.dumps(measure(args.items, args.rounds, Path(workdir)), indent=2))


if __name__ == "__main__":
    main()
