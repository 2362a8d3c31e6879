"""Hybrid ranking: score = (1 - a) * sim(q, item) + a * sim(q, proto(class(item)))."""

from __future__ import annotations

import numpy as np
import pytest

from index.build import build_snapshot
from index.ranking import Ranking
from index.snapshot import Snapshot, load_current
from models.types import CatalogRecord, Recipe
from tests.index.sample_records import make_records


def hybrid_oracle(snap: Snapshot, query: np.ndarray, a: float, kinds=None, filters=None):
    """Every allowed row scored exactly; best row per item; the formula applied per item."""
    unit = query / np.linalg.norm(query)
    allowed = snap.catalog.allowed_rows(kinds, filters)
    rows = np.arange(snap.manifest.n_vectors) if allowed is None else allowed
    sims = np.asarray(snap.vectors[rows]) @ unit
    best: dict[str, float] = {}
    class_of: dict[str, str | None] = {}
    for row, sim, item_id in zip(rows, sims, snap.catalog.item_ids_of_rows(rows), strict=True):
        best[item_id] = max(best.get(item_id, -np.inf), float(sim))
        class_of[item_id] = snap.prototypes.class_name_of_row(int(row))
    scores = {}
    for item_id, sim in best.items():
        name = class_of[item_id]
        proto = None if name is None else float(snap.prototypes.vector_of(name) @ unit)
        scores[item_id] = sim if proto is None else (1 - a) * sim + a * proto
    return sorted(scores.items(), key=lambda kv: -kv[1])


@pytest.fixture()
def snap(built):
    index_dir, manifest, _ = built
    opened = load_current(index_dir, manifest.model_fingerprint)
    yield opened
    opened.close()


@pytest.mark.parametrize("a", [0.3, 0.7, 1.0])
def test_hybrid_ranking_follows_the_formula(snap, encoder, a) -> None:
    query = encoder.encode_texts(["pasta with basil"])[0]

    matches = snap.search(query, 8, ranking=Ranking("hybrid", a))

    expected = hybrid_oracle(snap, query, a)[:8]
    assert [m.score for m in matches] == pytest.approx([score for _, score in expected], abs=1e-5)
    for match in matches:
        proto = snap.prototypes.vector_of(match.class_name) @ (query / np.linalg.norm(query))
        assert match.class_score == pytest.approx(float(proto), abs=1e-5)
        assert match.score == pytest.approx((1 - a) * match.item_score + a * match.class_score)


def test_hybrid_with_filters_and_kinds_matches_the_oracle(snap, encoder) -> None:
    query = encoder.encode_texts(["kimchi stew number 3"])[0]
    filters = {"minutes": {"gte": 20}}

    matches = snap.search(query, 5, kinds=["text"], filters=filters, ranking=Ranking("hybrid"))

    expected = hybrid_oracle(snap, query, 0.3, kinds=["text"], filters=filters)[:5]
    assert [(m.item_id, round(m.score, 5)) for m in matches] == [
        (item_id, round(score, 5)) for item_id, score in expected
    ]


def test_hybrid_pulls_the_query_class_up(snap, encoder) -> None:
    # a = 1 ranks purely by class: every item of the best class comes first.
    query = encoder.encode_texts(["pizza"])[0]
    best_class = snap.match_classes(query, 1)[0].info.name

    matches = snap.search(query, 4, ranking=Ranking("hybrid", 1.0))

    assert {m.class_name for m in matches} == {best_class}


def test_weight_zero_and_item_mode_rank_by_item_similarity(snap, encoder) -> None:
    query = encoder.encode_texts(["bibimbap served hot"])[0]

    by_item = snap.search(query, 10)
    by_zero = snap.search(query, 10, ranking=Ranking("hybrid", 0.0))

    assert [m.item_id for m in by_item] == [m.item_id for m in by_zero]
    assert by_item[0].item_score is None and by_item[0].class_score is None
    assert by_item[0].class_name is not None


def test_items_without_a_class_keep_their_item_similarity(tmp_path, encoder) -> None:
    records = make_records(tmp_path / "img", 6)
    records.append(CatalogRecord(id="loose", recipe=Recipe(title="pasta 0")))
    index_dir = tmp_path / "index"
    build_snapshot(records, encoder, index_dir)
    snap = load_current(index_dir, encoder.fingerprint)
    query = encoder.encode_recipes([Recipe(title="pasta 0")])[0]

    matches = snap.search(query, 7, ranking=Ranking("hybrid", 0.5))

    loose = next(m for m in matches if m.item_id == "loose")
    assert loose.class_name is None and loose.class_score is None
    assert loose.score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(("mode", "weight"), [("best", 0.3), ("hybrid", -0.1), ("hybrid", 2.0)])
def test_bad_rankings_are_refused(mode, weight) -> None:
    with pytest.raises(ValueError):
        Ranking(mode, weight)  # type: ignore[arg-type]
