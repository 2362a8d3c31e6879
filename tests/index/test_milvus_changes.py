"""Item changes on the Milvus backend (Milvus Lite): rows deleted and inserted in the
live collection, not a new collection; the same answers as FAISS with the same
changes; older snapshots sharing the collection never return a row they lack."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

import index.changes
from index.backends import IndexBackend
from index.build import build_snapshot
from index.changes import ApplyOptions, ItemChange, apply_changes
from index.layout import list_versions, read_current
from index.manifest import Manifest
from index.milvus_changes import RETIRED_FILE
from index.milvus_index import ROW_FIELD, read_keys
from index.snapshot import Snapshot, load_current
from models.types import CatalogRecord
from tests.index.sample_records import make_records
from tests.index.tiny_encoder import TinyEncoder

N_ITEMS = 20


def _changes(records: list[CatalogRecord]) -> list[ItemChange]:
    now = datetime.now(UTC)
    return [
        ItemChange("new-1", CatalogRecord("new-1", texts=("zucchini pancake",), label="jeon"), now),
        ItemChange(
            "item-3", CatalogRecord("item-3", texts=("grilled mackerel",), label="fish"), now
        ),
        ItemChange("item-5", None, now),
    ]


@pytest.fixture()
def records(tmp_path: Path) -> list[CatalogRecord]:
    return make_records(tmp_path / "images", N_ITEMS)


@pytest.fixture()
def backend(tmp_path: Path, milvus_uri: str) -> IndexBackend:
    return IndexBackend("milvus", str(tmp_path / "changes.db"))


def _collection_keys(backend: IndexBackend, collection: str) -> set[int]:
    assert backend.milvus is not None
    rows = backend.milvus.client.query(collection, filter=f"{ROW_FIELD} >= 0", output_fields=[])
    return {int(row[ROW_FIELD]) for row in rows}


def _apply(index_dir: Path, backend: IndexBackend, changes: list[ItemChange]) -> Manifest:
    options = ApplyOptions(batch_size=8, backend=backend)
    return apply_changes(index_dir, TinyEncoder(), changes, options)


def _open(index_dir: Path, backend: IndexBackend) -> Snapshot:
    return load_current(index_dir, TinyEncoder().fingerprint, backend=backend)


def _answers(snapshot: Snapshot, text: str) -> list[tuple[str, str, float]]:
    query = TinyEncoder().encode_texts([text])[0]
    results = []
    for kinds, filters in [(None, None), (["text"], None), (None, {"cuisine": "양식"})]:
        for match in snapshot.search(query, 6, kinds=kinds, filters=filters):
            results.append((match.item_id, match.kind, round(match.score, 5)))
    return results


def test_changes_go_into_the_live_collection(tmp_path, records, backend):
    index_dir = tmp_path / "milvus"
    before = build_snapshot(records, TinyEncoder(), index_dir, backend=backend)
    assert before.collection is not None and backend.milvus is not None
    base = _open(index_dir, backend)

    after = _apply(index_dir, backend, _changes(records))

    assert after.collection == before.collection  # no new collection
    assert set(backend.milvus.client.list_collections()) == {before.collection}
    keys = read_keys(index_dir / after.version, after.n_vectors)
    # The collection holds exactly the new snapshot's rows: replaced ones deleted.
    assert _collection_keys(backend, before.collection) == set(keys.tolist())
    assert backend.milvus.count(before.collection) == after.n_vectors
    # Untouched rows keep their keys (never re-inserted); the two upserted items'
    # two text rows have fresh keys above the old largest.
    changed = np.concatenate([base.catalog.rows_of_item(i) for i in ("item-3", "item-5")])
    untouched = np.setdiff1d(np.arange(before.n_vectors), changed)
    np.testing.assert_array_equal(keys[:-2], untouched)
    np.testing.assert_array_equal(keys[-2:], [before.n_vectors, before.n_vectors + 1])


def test_answers_and_prototypes_equal_faiss_with_the_same_changes(tmp_path, records, backend):
    faiss_dir, milvus_dir = tmp_path / "faiss", tmp_path / "milvus"
    build_snapshot(records, TinyEncoder(), faiss_dir)
    build_snapshot(records, TinyEncoder(), milvus_dir, backend=backend)
    _apply(faiss_dir, IndexBackend(), _changes(records))
    _apply(milvus_dir, backend, _changes(records))

    faiss_snap, milvus_snap = _open(faiss_dir, IndexBackend()), _open(milvus_dir, backend)
    for text in ("grilled mackerel", "zucchini pancake", "pizza served hot"):
        assert _answers(milvus_snap, text) == _answers(faiss_snap, text)
    query = TinyEncoder().encode_texts(["zucchini pancake"])[0]
    assert milvus_snap.match_classes(query, 3) == faiss_snap.match_classes(query, 3)
    assert "jeon" in {c.info.name for c in milvus_snap.match_classes(query, 30)}


def test_an_older_snapshot_never_returns_rows_it_lacks(tmp_path, records, backend):
    index_dir = tmp_path / "milvus"
    build_snapshot(records, TinyEncoder(), index_dir, backend=backend)
    old = _open(index_dir, backend)

    _apply(index_dir, backend, _changes(records))

    # The new item's rows are in the shared collection; the old snapshot's catalog has
    # no such rows, so it must not find them (nor fail); the replaced item's old rows
    # are deleted, so it no longer finds that item either (the documented window).
    found = {item for item, _, _ in _answers(old, "zucchini pancake")}
    assert "new-1" not in found and "item-3" not in found and found
    assert old.search(TinyEncoder().encode_texts(["zucchini pancake"])[0], N_ITEMS + 5)


def test_unknown_keys_are_skipped_and_the_next_apply_deletes_them(tmp_path, records, backend):
    index_dir = tmp_path / "milvus"
    build_snapshot(records, TinyEncoder(), index_dir, backend=backend)
    after = _apply(index_dir, backend, _changes(records))
    snapshot = _open(index_dir, backend)
    query = TinyEncoder().encode_texts(["pizza served hot"])[0]
    expected = _answers(snapshot, "pizza served hot")
    # A replaced row the apply did not get to delete (it died after publishing): the
    # query's own vector under a retired key, the best hit there is.
    assert backend.milvus is not None and after.collection is not None
    retired = int(np.load(index_dir / after.version / RETIRED_FILE)[0])
    backend.milvus.insert(after.collection, query[None, :], first_key=retired)

    assert _answers(snapshot, "pizza served hot") == expected
    _, rows = snapshot.index.search(query[None, :], 10)  # fetched again past the unknown key
    assert (rows >= 0).all() and rows.max() < after.n_vectors
    assert len(snapshot.search(query, N_ITEMS - 1)) == N_ITEMS - 1

    newer = _apply(index_dir, backend, [ItemChange("item-9", None, datetime.now(UTC))])
    assert backend.milvus.count(after.collection) == newer.n_vectors


def test_a_failed_apply_takes_its_rows_out_again(tmp_path, records, backend, monkeypatch):
    index_dir = tmp_path / "milvus"
    before = build_snapshot(records, TinyEncoder(), index_dir, backend=backend)

    def crash(*_args: object) -> None:
        raise OSError("disk gone at publish")

    monkeypatch.setattr(index.changes, "_publish_on", crash)
    with pytest.raises(OSError, match="disk gone"):
        _apply(index_dir, backend, _changes(records))

    assert read_current(index_dir) == before.version
    assert backend.milvus is not None and before.collection is not None
    assert _collection_keys(backend, before.collection) == set(range(before.n_vectors))


def test_prune_keeps_a_collection_a_kept_snapshot_shares(tmp_path, records, backend):
    index_dir = tmp_path / "milvus"
    first = build_snapshot(records, TinyEncoder(), index_dir, backend=backend)
    options = ApplyOptions(batch_size=8, backend=backend, keep_older=0)
    changed = apply_changes(index_dir, TinyEncoder(), _changes(records), options)
    assert list_versions(index_dir) == [changed.version]  # the first folder is pruned
    assert backend.milvus is not None
    assert set(backend.milvus.client.list_collections()) == {first.collection}
    assert _open(index_dir, backend).search(TinyEncoder().encode_texts(["pizza"])[0], 3)

    rebuilt = build_snapshot(records, TinyEncoder(), index_dir, backend=backend, keep_older=0)
    assert set(backend.milvus.client.list_collections()) == {rebuilt.collection}
