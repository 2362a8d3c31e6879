"""Cached local features (image regions, caption n-grams) of a captioned dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.images import load_image
from models.rerank import word_ngrams
from models.towers import OfflineTowers
from models.types import CatalogRecord
from training.local_features import local_cache_path, local_features


@pytest.fixture(scope="module")
def towers(offline_encoder) -> OfflineTowers:  # type: ignore[no-untyped-def]
    return OfflineTowers(encoder=offline_encoder)


def test_regions_and_caption_grams_are_cached(
    towers: OfflineTowers, burrito_paths: list[Path], tmp_path: Path
) -> None:
    records = [
        CatalogRecord(id="a", image_path=burrito_paths[0], texts=("a burrito", "rice and beans")),
        CatalogRecord(id="b", image_path=burrito_paths[1], texts=("a big burrito",)),
        CatalogRecord(id="no-caption", image_path=burrito_paths[2]),
    ]
    features = local_features(towers, records, tmp_path)
    assert features.ids == ["a", "b"]
    assert features.regions.shape == (2, 49, 1280) and features.regions.dtype == np.float16
    assert features.caption_owner.tolist() == [0, 0, 1]
    assert [len(features.grams.row(i)) for i in range(3)] == [3, 5, 5]
    # Row 2 is "a big burrito": its grams in word_ngrams order, embedded as queries.
    expected = towers.text_features(word_ngrams("a big burrito"), query=True)
    np.testing.assert_allclose(features.grams.row(2), expected, atol=2e-3)
    regions = towers.image_regions([load_image(burrito_paths[1])])
    # Batched with another photo or alone: equal up to float16 rounding.
    np.testing.assert_allclose(features.regions[1], regions[0], atol=1e-2, rtol=1e-2)
    assert local_cache_path(tmp_path, towers, records[:2]).is_file()
    cached = local_features(towers, records, tmp_path)
    np.testing.assert_array_equal(cached.grams.values, features.grams.values)
    np.testing.assert_array_equal(cached.regions, features.regions)
