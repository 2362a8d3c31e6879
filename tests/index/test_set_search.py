"""Set rows (DivE): gathered by their nearest rows, ranked by the exact smooth-Chamfer,
and never part of a plain search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from index import set_search
from index.set_search import SET_ROWS_FILE, SetRows, set_kind, set_means
from index.snapshot import InvalidQueryError, Snapshot, load_current
from models.set_similarity import smooth_chamfer

SLOTS = 3


def random_sets(n: int, dim: int, seed: int) -> np.ndarray:
    sets = np.random.default_rng(seed).standard_normal((n, SLOTS, dim)).astype(np.float32)
    return sets / np.linalg.norm(sets, axis=-1, keepdims=True)


def exact_scores(query: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """The oracle: smooth-Chamfer of the query set and every set, computed directly."""
    return smooth_chamfer(torch.from_numpy(query), torch.from_numpy(sets)).numpy()


def test_small_table_ranks_every_item_by_exact_smooth_chamfer(tmp_path: Path) -> None:
    # 20 sets x 3 rows: every query vector fetches all 60 rows, so nothing is missed.
    sets = random_sets(20, 8, seed=0)
    entries = [(f"item-{i}", "image_set") for i in range(20)]
    table = SetRows.write(tmp_path, entries, sets)
    query = random_sets(1, 8, seed=1)[0]
    hits = table.search(query, k=5)
    truth = exact_scores(query, sets)
    best = np.argsort(-truth)[:5]
    assert [h.item_id for h in hits] == [f"item-{i}" for i in best]
    np.testing.assert_allclose([h.score for h in hits], truth[best], rtol=1e-5)


def test_item_scores_its_best_set_and_exclusions_hold(tmp_path: Path) -> None:
    sets = random_sets(6, 8, seed=2)
    query = sets[4].copy()  # item "b"'s text set is the query itself
    entries = [("a", "image_set"), ("a", "text_set"), ("b", "image_set")]
    entries += [("c", "image_set"), ("b", "text_set"), ("d", "image_set")]
    table = SetRows.write(tmp_path, entries, sets)
    hits = table.search(query, k=10)
    assert [h.item_id for h in hits][0] == "b" and hits[0].kind == "text_set"
    assert sorted(h.item_id for h in hits) == ["a", "b", "c", "d"]  # one match per item
    assert "b" not in [h.item_id for h in table.search(query, k=10, exclude={"b"})]


def test_large_table_returns_exact_scores_in_order(tmp_path: Path) -> None:
    # More rows than a query vector fetches: the gathered candidates are re-scored exactly.
    sets = random_sets(400, 16, seed=3)
    table = SetRows.write(tmp_path, [(str(i), "text_set") for i in range(400)], sets)
    query = sets[7] + 0.1 * random_sets(1, 16, seed=4)[0]
    hits = table.search(query, k=10)
    truth = exact_scores(query, sets)
    scores = [h.score for h in hits]
    assert hits[0].item_id == "7" and scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(scores, truth[[int(h.item_id) for h in hits]], rtol=1e-5)


def test_reloaded_table_searches_the_same(tmp_path: Path) -> None:
    sets = random_sets(30, 8, seed=5)
    written = SetRows.write(tmp_path, [(str(i), "image_set") for i in range(30)], sets)
    loaded = SetRows.load(tmp_path)
    assert loaded is not None and loaded.slots == SLOTS
    assert loaded.search(sets[3], 4) == written.search(sets[3], 4)
    assert SetRows.load(tmp_path / "nothing-here") is None


def test_set_means_are_unit_means_of_unit_slots_chunk_by_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(set_search, "_MEAN_CHUNK_SETS", 2)  # 5 sets: chunks of 2, 2, 1
    sets = 3.0 * random_sets(5, 8, seed=8)  # slots of norm 3: normalised before averaging
    means = set_means(sets.reshape(-1, 8), SLOTS)
    expected = (sets / 3.0).mean(axis=1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(means, expected, rtol=1e-5)


def test_the_index_holds_set_means_and_the_query_mean_probes_it(tmp_path: Path) -> None:
    sets = random_sets(400, 8, seed=9)
    table = SetRows.write(tmp_path, [(str(i), "text_set") for i in range(400)], sets)
    assert table.index.ntotal == 400
    query = random_sets(1, 8, seed=10)[0]
    # Flat over the 400 means; k = 1 fetches 3 x (1 + 16) = 51 sets: those nearest the
    # query set's unit mean, whatever the query's single vectors' nearest sets are.
    nearest = np.argsort(-(set_means(sets.reshape(-1, 8), SLOTS) @ set_means(query, SLOTS)[0]))
    assert table.gather(query, k=1).tolist() == sorted(nearest[:51].tolist())


def test_a_query_set_whose_mean_is_zero_probes_with_each_vector(tmp_path: Path) -> None:
    sets = random_sets(400, 8, seed=12)
    table = SetRows.write(tmp_path, [(str(i), "text_set") for i in range(400)], sets)
    query = np.stack([sets[5, 0], -sets[5, 0]])  # mean zero: no direction to probe with
    means = set_means(sets.reshape(-1, 8), SLOTS)
    nearest = {int(i) for q in query for i in np.argsort(-(means @ q))[:78]}  # 3 x (10 + 16)
    assert set(table.gather(query, k=10).tolist()) == nearest
    assert len(table.search(query, k=10)) == 10


def test_an_older_layout_loads_as_no_set_rows(tmp_path: Path) -> None:
    # Written before set_index.faiss held means, it held every slot: not searchable as is.
    SetRows.write(tmp_path, [(str(i), "image_set") for i in range(4)], random_sets(4, 8, seed=11))
    meta = json.loads((tmp_path / SET_ROWS_FILE).read_text(encoding="utf-8"))
    del meta["index"]
    (tmp_path / SET_ROWS_FILE).write_text(json.dumps(meta), encoding="utf-8")
    assert SetRows.load(tmp_path) is None


def with_set_rows(index_dir: Path, dim: int) -> tuple[Snapshot, np.ndarray]:
    """The live snapshot with set rows for each of its items added beside its index."""
    snap = load_current(index_dir)
    ids = sorted(
        {item_id for item_id in snap.catalog.item_ids_of_rows(np.arange(snap.manifest.n_vectors))}
    )
    sets = random_sets(len(ids), dim, seed=6)
    SetRows.write(snap.path, [(i, set_kind("image")) for i in ids], sets)
    snap.close()
    return load_current(index_dir), sets


def test_snapshot_set_rows_never_appear_in_plain_search(built) -> None:
    index_dir, manifest, _ = built
    plain = load_current(index_dir)
    query = np.random.default_rng(7).standard_normal(manifest.dim).astype(np.float32)
    before = plain.search(query, k=30)
    plain.close()
    snap, sets = with_set_rows(index_dir, manifest.dim)
    assert snap.sets is not None and snap.sets.vectors.shape[0] == manifest.n_items * SLOTS
    assert snap.sets.index.ntotal == manifest.n_items  # one mean per set
    after = snap.search(query, k=30)
    assert after == before
    assert not any(m.kind.endswith("_set") for m in after)
    # A set search over the same snapshot does return set kinds, with exact scores.
    matches = snap.search_sets(sets[0], k=3)
    assert matches[0].kind == "image_set" and matches[0].rank == 1
    assert matches[0].score == pytest.approx(float(exact_scores(sets[0], sets[:1])[0]), rel=1e-5)
    snap.close()


def test_snapshot_without_set_rows_refuses_set_search(built) -> None:
    index_dir, manifest, _ = built
    snap = load_current(index_dir)
    assert snap.sets is None and not (snap.path / SET_ROWS_FILE).exists()
    with pytest.raises(InvalidQueryError, match="no set rows"):
        snap.search_sets(np.ones((SLOTS, manifest.dim), np.float32), k=3)
    snap.close()


def test_snapshot_refuses_bad_query_sets(built) -> None:
    index_dir, manifest, _ = built
    snap, _ = with_set_rows(index_dir, manifest.dim)
    with pytest.raises(InvalidQueryError):
        snap.search_sets(np.zeros((SLOTS, manifest.dim), np.float32), k=3)
    with pytest.raises(InvalidQueryError):
        snap.search_sets(np.ones((SLOTS, manifest.dim), np.float32), k=0)
    snap.close()
