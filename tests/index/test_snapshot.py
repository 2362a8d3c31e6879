"""Snapshot loading and search: one result per item, filters, exclusions, errors."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import index.snapshot as snapshot_module
from index.catalog import FilterError
from index.layout import read_current
from index.snapshot import (
    CorruptSnapshotError,
    DimensionMismatchError,
    FingerprintMismatchError,
    InvalidQueryError,
    NoSnapshotError,
    Snapshot,
    UnknownItemError,
    load_current,
)


def brute_force(snap: Snapshot, query: np.ndarray, k: int, kinds=None, filters=None, exclude=()):
    """The oracle: every allowed row scored exactly, best row per item."""
    allowed = snap.catalog.allowed_rows(kinds, filters)
    rows = np.arange(snap.manifest.n_vectors) if allowed is None else allowed
    scores = np.asarray(snap.vectors[rows]) @ (query / np.linalg.norm(query))
    best: dict[str, float] = {}
    for score, item_id in zip(scores, snap.catalog.item_ids_of_rows(rows), strict=True):
        if item_id not in exclude:
            best[item_id] = max(best.get(item_id, -np.inf), float(score))
    return sorted(best.items(), key=lambda kv: -kv[1])[:k]


@pytest.fixture()
def snap(built):
    index_dir, manifest, _ = built
    opened = load_current(index_dir, manifest.model_fingerprint)
    yield opened
    opened.close()


def test_round_trip_manifest_and_files(built, snap, encoder):
    index_dir, manifest, records = built
    assert read_current(index_dir) == manifest.version == snap.version
    assert sorted(p.name for p in (index_dir / manifest.version).iterdir()) == [
        "catalog.sqlite", "classes.json", "index.faiss", "manifest.json", "prototypes.npy",
        "row_classes.npy", "vectors.npy",
    ]  # fmt: skip
    on_disk = json.loads((index_dir / manifest.version / "manifest.json").read_text())
    assert on_disk["model_fingerprint"] == encoder.fingerprint
    assert on_disk["metric"] == "ip" and on_disk["factory"] == "Flat"
    assert (snap.manifest.n_items, snap.manifest.n_vectors) == (30, 120)
    assert snap.manifest.kinds == {"image": 30, "recipe": 30, "text": 60}
    assert snap.manifest.source == "synthetic" and snap.manifest.created_at.endswith("Z")
    texts = snap.item_vectors("item-7", kinds=["text"])
    np.testing.assert_allclose(texts, encoder.encode_texts(records[7].texts), atol=1e-6)


def test_one_result_per_item_equals_brute_force(snap, encoder):
    query = encoder.encode_texts(["kimchi stew number 8"])[0]
    matches = snap.search(query, 12)
    want = brute_force(snap, query, 12)
    assert [m.item_id for m in matches] == [item_id for item_id, _ in want]
    np.testing.assert_allclose([m.score for m in matches], [s for _, s in want], atol=1e-5)
    assert [m.rank for m in matches] == list(range(1, 13))
    assert len({m.item_id for m in matches}) == 12


def test_all_items_come_back_once_when_k_is_large(snap, encoder):
    matches = snap.search(encoder.encode_texts(["pizza"])[0], 1000)
    assert len(matches) == 30 == len({m.item_id for m in matches})


def test_match_reports_winning_kind_and_metadata(snap, encoder, built):
    records = built[2]
    query = encoder.encode_texts([records[4].texts[1]])[0]  # exactly one of item-4's captions
    best = snap.search(query, 3)[0]
    assert (best.item_id, best.kind, best.rank) == ("item-4", "text", 1)
    assert best.score == pytest.approx(1.0, abs=1e-5)
    assert best.metadata == records[4].metadata and best.label == records[4].label
    image_query = snap.item_vectors("item-9", kinds=["image"])[0]
    assert snap.search(image_query, 1)[0].kind == "image"


def test_kinds_and_filters(snap, encoder):
    query = encoder.encode_texts(["bibimbap"])[0]
    matches = snap.search(query, 5, kinds=["recipe"], filters={"cuisine": ["양식", "중식"]})
    assert len(matches) == 5
    assert {m.kind for m in matches} == {"recipe"}
    assert {m.metadata["cuisine"] for m in matches} <= {"양식", "중식"}
    want = brute_force(snap, query, 5, ["recipe"], {"cuisine": ["양식", "중식"]})
    assert [m.item_id for m in matches] == [item_id for item_id, _ in want]
    assert snap.search(query, 5, filters={"minutes": {"gte": 1000}}) == []
    with pytest.raises(FilterError):
        snap.search(query, 5, filters={"bad field": 1})


def test_exclude_ids_for_search_by_item(snap):
    query = snap.item_vectors("item-3", kinds=["image"])[0]
    matches = snap.search(query, 10, exclude_ids={"item-3", "item-5"})
    assert len(matches) == 10
    assert not {"item-3", "item-5"} & {m.item_id for m in matches}
    assert [m.item_id for m in matches] == [
        item_id for item_id, _ in brute_force(snap, query, 10, exclude={"item-3", "item-5"})
    ]


def test_widening_through_an_approximate_index(tmp_path, encoder, monkeypatch):
    """HNSW and the index path (no exact shortcut): still k distinct items."""
    from index.build import build_snapshot
    from tests.index.sample_records import make_records

    records = make_records(tmp_path / "img", 60)
    manifest = build_snapshot(records, encoder, tmp_path / "ix", factory="HNSW32")
    snap = load_current(tmp_path / "ix", manifest.model_fingerprint)
    query = encoder.encode_texts(["mapo tofu"])[0]
    narrow = snap.search(query, 10, filters={"n": {"lt": 7}})  # small set: scored exactly
    assert [m.item_id for m in narrow] == [
        i for i, _ in brute_force(snap, query, 7, None, {"n": {"lt": 7}})
    ]
    monkeypatch.setattr(snapshot_module, "EXACT_SEARCH_MAX_ROWS", 0)
    for kwargs in ({}, {"kinds": ["text"]}, {"filters": {"cuisine": "한식"}}):
        matches = snap.search(query, 20, **kwargs)
        assert len(matches) == 20 == len({m.item_id for m in matches})
        assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    assert len(snap.search(query, 100, filters={"cuisine": "한식"})) == 20  # all there are


def test_dimension_mismatch(snap):
    with pytest.raises(DimensionMismatchError) as caught:
        snap.search(np.ones(snap.dim + 3, np.float32), 5)
    assert (caught.value.expected, caught.value.got) == (snap.dim, snap.dim + 3)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("bad", [np.zeros(32), np.full(32, np.nan), np.ones((2, 32))])
def test_unsearchable_queries(snap, bad):
    with pytest.raises(InvalidQueryError):
        snap.search(bad, 5)


def test_bad_k(snap):
    with pytest.raises(InvalidQueryError, match="k must be"):
        snap.search(np.ones(32), 0)
    with pytest.raises(InvalidQueryError, match="k must be"):
        snap.search(np.ones(32), 2.5)
    assert len(snap.search(np.ones(32), np.int64(3))) == 3


def test_get_item_and_unknown_items(snap):
    item = snap.get_item("item-2")
    assert item is not None and item.kinds == ["image", "recipe", "text"]
    assert snap.get_item("nope") is None
    with pytest.raises(UnknownItemError):
        snap.item_vectors("nope")
    assert snap.item_vectors("item-2", kinds=["video"]).shape == (0, 32)


def test_fingerprint_mismatch(built):
    index_dir, manifest, _ = built
    with pytest.raises(FingerprintMismatchError) as caught:
        load_current(index_dir, "other-model")
    message = str(caught.value)
    assert manifest.version in message and manifest.model_fingerprint in message
    assert "other-model" in message and "re-index" in message


def test_no_snapshot_says_how_to_build_one(tmp_path: Path):
    with pytest.raises(NoSnapshotError, match=r"mmsearch index.*POST /admin/reindex"):
        load_current(tmp_path, None)


def test_inconsistent_files_are_refused(built):
    index_dir, manifest, _ = built
    path = index_dir / manifest.version / "manifest.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "n_vectors": 7}))
    with pytest.raises(CorruptSnapshotError, match="inconsistent"):
        load_current(index_dir)
    (index_dir / manifest.version / "vectors.npy").unlink()
    with pytest.raises(CorruptSnapshotError, match="vectors.npy"):
        load_current(index_dir)


def test_concurrent_searches_agree(snap, encoder):
    queries = encoder.encode_texts([f"dish {i}" for i in range(16)])
    expected = [[m.item_id for m in snap.search(q, 5)] for q in queries]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda q: [m.item_id for m in snap.search(q, 5)], queries))
    assert got == expected
