"""The item-vs-hybrid measurement runs on a real snapshot and reports sane figures."""

from __future__ import annotations

import pytest

from models.types import CatalogRecord
from tests.index.sample_records import make_records, write_image
from training.ranking_eval import compare_rankings


def test_paired_catalog_reports_recall_and_class_precision(tmp_path, encoder) -> None:
    records = make_records(tmp_path / "img", 21)

    result = compare_rankings(encoder, records, weights=(0.0, 0.5), ks=(1, 5))

    assert result["n_queries"] == 21 and result["target_kinds"] == ["recipe", "text"]
    assert set(result["modes"]) == {"item", "hybrid@0", "hybrid@0.5"}
    for figures in result["modes"].values():
        assert set(figures) == {"recall@1", "recall@5", "class_precision@1", "class_precision@5"}
        assert all(0.0 <= value <= 1.0 for value in figures.values())
    assert result["modes"]["hybrid@0"] == result["modes"]["item"]  # a = 0 is item ranking


def test_image_only_catalog_leaves_the_query_out(tmp_path, encoder) -> None:
    # Members of a class share one photo; "c" has a single member, so its query can only
    # find another class once it is left out of its own results.
    photos = {name: write_image(tmp_path / f"{name}.png", seed) for seed, name in enumerate("abc")}
    labels = ["a", "a", "a", "b", "b", "b", "c"]
    records = [
        CatalogRecord(id=f"{label}{i}", image_path=photos[label], label=label)
        for i, label in enumerate(labels)
    ]

    result = compare_rankings(encoder, records, weights=(0.5,), ks=(1, 2))

    assert result["n_queries"] == 7 and result["target_kinds"] == ["image"]
    item = result["modes"]["item"]
    assert set(item) == {"class_precision@1", "class_precision@2"}  # no paired item to recall
    assert item["class_precision@1"] == pytest.approx(6 / 7)
    assert item["class_precision@2"] == pytest.approx(6 / 7)
