"""A chunked build (index/chunks.py): chunks encoded separately, in any order and more
than once, merge into the snapshot the single build makes of the same source."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from index.backends import IndexBackend
from index.build import BuildError, build_snapshot
from index.chunks import Chunk, encode_chunk, merge_chunks, plan_chunks
from index.layout import chunks_dir, new_version, read_current
from index.manifest import Manifest
from index.milvus_index import collection_name
from index.snapshot import CATALOG_FILE, VECTORS_FILE, load_current
from models.types import CatalogRecord
from tests.index.sample_records import make_records
from tests.index.test_incremental import CountingEncoder
from tests.index.tiny_encoder import TinyEncoder

BATCH = 2


def catalog_tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    db = sqlite3.connect(path / CATALOG_FILE)
    try:
        return {
            "items": db.execute("SELECT rowid, * FROM items ORDER BY rowid").fetchall(),
            "vectors": db.execute("SELECT * FROM vectors ORDER BY row").fetchall(),
            "images": db.execute("SELECT * FROM images ORDER BY item_id").fetchall(),
        }
    finally:
        db.close()


def chunked_build(
    records: list[CatalogRecord],
    encoder: TinyEncoder,
    index_dir: Path,
    chunks: list[Chunk],
    order: list[int] | None = None,
) -> Manifest:
    build = new_version()
    for i in order if order is not None else range(len(chunks)):
        encode_chunk(records, encoder, index_dir, build, chunks[i], batch_size=BATCH)
    return merge_chunks(encoder, index_dir, build, len(chunks), keep_older=2)


def test_plan_cuts_whole_batches_and_the_last_chunk_runs_to_the_end() -> None:
    chunks = plan_chunks(13, batch_size=2, chunks=3)
    assert [(c.start, c.stop) for c in chunks] == [(0, 6), (6, 12), (12, None)]
    assert sum(c.size(13) for c in chunks) == 13
    assert [(c.start, c.stop) for c in plan_chunks(10, 4, chunk_size=5)] == [(0, 8), (8, None)]
    assert plan_chunks(3, 32, chunks=4) == [Chunk(0, 0, None)]  # one batch: one chunk
    with pytest.raises(ValueError, match="exactly one"):
        plan_chunks(10, 2, chunks=2, chunk_size=4)
    with pytest.raises(ValueError, match="positive"):
        plan_chunks(10, 2, chunks=0)


def test_chunks_in_any_order_and_retried_merge_into_the_single_builds_snapshot(
    tmp_path: Path,
) -> None:
    records = make_records(tmp_path / "images", 13)  # the last batch is a partial one
    encoder = TinyEncoder()
    single = build_snapshot(records, encoder, tmp_path / "single", batch_size=BATCH)
    chunks = plan_chunks(len(records), BATCH, chunks=3)
    # Chunk 1 twice: a retried attempt (or a second worker) replaces its file, adds nothing.
    merged = chunked_build(records, encoder, tmp_path / "chunked", chunks, order=[2, 1, 0, 1])

    single_dir, merged_dir = (
        tmp_path / "single" / single.version,
        tmp_path / "chunked" / merged.version,
    )
    assert np.array_equal(np.load(single_dir / VECTORS_FILE), np.load(merged_dir / VECTORS_FILE))
    assert catalog_tables(single_dir) == catalog_tables(merged_dir)
    assert (merged.n_items, merged.n_vectors, merged.kinds) == (
        single.n_items,
        single.n_vectors,
        single.kinds,
    )
    assert merged.changes == single.changes
    assert read_current(tmp_path / "chunked") == merged.version
    assert list((tmp_path / "chunked").glob(".chunks-*")) == []  # removed once merged


def test_a_missing_chunk_fails_the_merge_and_keeps_the_live_snapshot(tmp_path: Path) -> None:
    records = make_records(tmp_path / "images", 8)
    encoder = TinyEncoder()
    live = build_snapshot(records[:4], encoder, tmp_path / "index").version
    chunks = plan_chunks(len(records), BATCH, chunks=2)
    build = new_version()
    encode_chunk(records, encoder, tmp_path / "index", build, chunks[0], batch_size=BATCH)

    with pytest.raises(BuildError, match=r"chunk\(s\) \[1\] of 2"):
        merge_chunks(encoder, tmp_path / "index", build, len(chunks))
    assert read_current(tmp_path / "index") == live
    assert chunks_dir(tmp_path / "index", build).is_dir()  # chunk 0 waits for a retried 1


def test_each_chunk_reuses_the_live_vectors_of_unchanged_items(tmp_path: Path) -> None:
    records = make_records(tmp_path / "images", 10)
    first = chunked_build(
        records, TinyEncoder(), tmp_path / "index", plan_chunks(10, BATCH, chunks=3)
    )
    counting = CountingEncoder()
    changed = [replace(records[3], texts=("a new caption",)), *records[4:9]]  # 0-2 and 9 gone
    again = chunked_build(
        changed, counting, tmp_path / "index", plan_chunks(len(changed), BATCH, chunks=2)
    )

    assert counting.inputs == {"image": 1, "text": 1, "recipe": 1}  # item 3 alone
    assert again.changes == {
        "items_embedded": 1,
        "vectors_embedded": 3,
        "items_reused": 5,
        "vectors_reused": 20,
        "items_removed": 4,
    }
    assert again.reused_from == first.version


def test_the_same_id_in_two_chunks_fails_the_merge(tmp_path: Path) -> None:
    records = make_records(tmp_path / "images", 6)
    records[5] = replace(records[5], id=records[0].id)
    with pytest.raises(BuildError, match="duplicate item id"):
        chunked_build(records, TinyEncoder(), tmp_path / "index", plan_chunks(6, BATCH, chunks=2))
    assert read_current(tmp_path / "index") is None


def test_a_chunked_build_on_the_milvus_backend_answers_like_the_single_faiss_build(
    tmp_path: Path, milvus_uri: str
) -> None:
    records = make_records(tmp_path / "images", 10)
    encoder = TinyEncoder()
    build_snapshot(records, encoder, tmp_path / "faiss", batch_size=BATCH)
    backend = IndexBackend("milvus", str(tmp_path / "chunks.db"))
    build = new_version()
    chunks = plan_chunks(len(records), BATCH, chunks=2)
    for chunk in chunks:
        encode_chunk(records, encoder, tmp_path / "milvus", build, chunk, batch_size=BATCH)
    manifest = merge_chunks(encoder, tmp_path / "milvus", build, len(chunks), backend=backend)

    assert (manifest.backend, manifest.collection) == ("milvus", collection_name(manifest.version))
    faiss_snap = load_current(tmp_path / "faiss")
    milvus_snap = load_current(tmp_path / "milvus", backend=backend)
    query = encoder.encode_texts(["pizza served hot"])[0]
    want, got = faiss_snap.search(query, 5), milvus_snap.search(query, 5)
    assert [(m.item_id, m.kind) for m in got] == [(m.item_id, m.kind) for m in want]
