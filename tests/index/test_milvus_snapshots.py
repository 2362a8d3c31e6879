"""Snapshots on the Milvus backend: the same answers as FAISS, the alias follows
publishing, pruning drops collections, and old manifests still load as FAISS."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from index.backends import AliasNotMovedError, IndexBackend
from index.build import ShrinkRefusedError, build_snapshot
from index.changes import ApplyOptions, ItemChange, apply_changes
from index.layout import CorruptSnapshotError, read_current
from index.manifest import MANIFEST_FILE
from index.milvus_index import (
    CURRENT_ALIAS,
    MilvusStore,
    MilvusUnavailableError,
    collection_name,
)
from index.snapshot import INDEX_FILE, load_current
from tests.index.sample_records import make_records


@pytest.fixture()
def records(tmp_path):
    return make_records(tmp_path / "images", 20)


@pytest.fixture()
def backend(tmp_path, milvus_uri) -> IndexBackend:
    """A Milvus Lite file of its own: the alias is one per database."""
    return IndexBackend("milvus", str(tmp_path / "alias-test.db"))


def collections(backend: IndexBackend) -> set[str]:
    assert backend.milvus is not None
    return set(backend.milvus.client.list_collections())


def alias_target(backend: IndexBackend) -> str:
    assert backend.milvus is not None
    return backend.milvus.client.describe_alias(CURRENT_ALIAS)["collection_name"]


def test_milvus_snapshot_answers_like_faiss(tmp_path, records, encoder, backend):
    faiss_dir, milvus_dir = tmp_path / "faiss", tmp_path / "milvus"
    build_snapshot(records, encoder, faiss_dir)
    manifest = build_snapshot(records, encoder, milvus_dir, backend=backend)
    assert (manifest.backend, manifest.collection) == ("milvus", collection_name(manifest.version))
    assert not (milvus_dir / manifest.version / INDEX_FILE).exists()
    faiss_snap = load_current(faiss_dir)
    milvus_snap = load_current(milvus_dir, backend=backend)
    query = encoder.encode_texts(["pizza served hot"])[0]
    for kinds, filters in [(None, None), (["recipe"], None), (None, {"cuisine": "양식"})]:
        want = faiss_snap.search(query, 5, kinds=kinds, filters=filters)
        got = milvus_snap.search(query, 5, kinds=kinds, filters=filters)
        assert [(m.item_id, m.kind) for m in got] == [(m.item_id, m.kind) for m in want]
        np.testing.assert_allclose([m.score for m in got], [m.score for m in want], atol=1e-5)


def test_publish_points_the_alias_and_prune_drops_collections(tmp_path, records, encoder, backend):
    first = build_snapshot(records, encoder, tmp_path, backend=backend, keep_older=0)
    assert alias_target(backend) == first.collection
    second = build_snapshot(records, encoder, tmp_path, backend=backend, keep_older=0)
    assert read_current(tmp_path) == second.version
    assert alias_target(backend) == second.collection
    assert collections(backend) == {second.collection}  # the first went with its folder


def test_unpublished_build_leaves_the_alias_alone(tmp_path, records, encoder, backend):
    live = build_snapshot(records, encoder, tmp_path, backend=backend)
    staged = build_snapshot(records, encoder, tmp_path, backend=backend, publish_snapshot=False)
    assert alias_target(backend) == live.collection
    assert staged.collection in collections(backend)


def test_refused_build_drops_its_collection(tmp_path, records, encoder, backend):
    live = build_snapshot(records, encoder, tmp_path, backend=backend)
    with pytest.raises(ShrinkRefusedError):
        build_snapshot(records[:2], encoder, tmp_path, backend=backend, min_kept_share=0.6)
    assert collections(backend) == {live.collection}


def test_faiss_factories_are_refused_before_encoding(tmp_path, records, encoder, backend):
    with pytest.raises(ValueError, match="milvus backend builds 'Flat'"):
        build_snapshot(records, encoder, tmp_path, backend=backend, factory="HNSW32")


def test_old_manifest_loads_as_faiss_under_a_milvus_backend(built, backend):
    index_dir, manifest, _ = built
    path = index_dir / manifest.version / MANIFEST_FILE
    fields = json.loads(path.read_text(encoding="utf-8"))
    fields.pop("backend"), fields.pop("collection")  # as written before this field existed
    path.write_text(json.dumps(fields), encoding="utf-8")
    snap = load_current(index_dir, backend=backend)
    assert snap.manifest.backend == "faiss" and snap.index.ntotal == manifest.n_vectors


def test_milvus_snapshot_needs_a_milvus_backend(tmp_path: Path, records, encoder, backend):
    build_snapshot(records, encoder, tmp_path, backend=backend)
    with pytest.raises(CorruptSnapshotError, match="MMSEARCH_MILVUS_URI"):
        load_current(tmp_path)


def _alias_update_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: MilvusStore, collection: str) -> None:
        raise MilvusUnavailableError("Milvus alter_alias failed: connection reset")

    monkeypatch.setattr(MilvusStore, "point_alias", refuse)


def test_a_failed_alias_update_keeps_the_published_collection(
    tmp_path, records, encoder, backend, monkeypatch
):
    first = build_snapshot(records, encoder, tmp_path, backend=backend)
    _alias_update_fails(monkeypatch)
    with pytest.raises(AliasNotMovedError, match="is live, but the Milvus alias"):
        build_snapshot(records, encoder, tmp_path, backend=backend)

    live = read_current(tmp_path)
    assert live != first.version
    # CURRENT serves from the new collection: it must still be there and searchable.
    snapshot = load_current(tmp_path, backend=backend)
    assert snapshot.manifest.collection in collections(backend)
    assert snapshot.search(encoder.encode_texts(["pizza served hot"])[0], 3)
    assert alias_target(backend) == first.collection  # not moved, as reported


def test_a_failed_alias_update_keeps_the_collection_of_applied_changes(
    tmp_path, records, encoder, backend, monkeypatch
):
    # A FAISS base under a Milvus backend: item changes write a collection of their own.
    build_snapshot(records, encoder, tmp_path)
    _alias_update_fails(monkeypatch)
    change = ItemChange("item-1", None, datetime.now(UTC))
    with pytest.raises(AliasNotMovedError):
        apply_changes(tmp_path, encoder, [change], ApplyOptions(batch_size=8, backend=backend))

    snapshot = load_current(tmp_path, backend=backend)
    assert snapshot.manifest.collection in collections(backend)
    assert snapshot.search(encoder.encode_texts(["pizza served hot"])[0], 3)
