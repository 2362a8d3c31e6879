"""Tower features: shapes, ragged recipe sequences, caching (tiny open_clip towers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.datasets import open_dataset
from models.encoders.openclip import OpenClipEncoder
from models.towers import EncoderTowers
from tests.bundles import TINY_ARCH
from training.features import (
    Ragged,
    extract_features,
    load_feature_arrays,
    query_texts,
    save_feature_arrays,
)
from training.set_features import PairedSetFeatures


class CountingTowers(EncoderTowers):
    """Real tiny towers that count how many images they were asked to embed."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__("tiny", encoder=OpenClipEncoder(TINY_ARCH, None, device="cpu"))
        self.images_seen = 0

    def image_features(self, images):  # type: ignore[no-untyped-def]
        self.images_seen += len(images)
        return super().image_features(images)


@pytest.fixture(scope="module")
def towers() -> CountingTowers:
    return CountingTowers()


def test_features_of_kfood_records(towers: CountingTowers, kfood_sample: Path) -> None:
    records = list(open_dataset(kfood_sample, "kfood"))
    fs = extract_features(towers, records, views=3, seed=0)
    n = len(records)
    assert fs.ids == [r.id for r in records]
    assert fs.images.shape == (n, 3, 64) and fs.has_image.all() and fs.has_recipe.all()
    for i, record in enumerate(records):
        assert record.recipe is not None
        assert len(fs.ingredients.row(i)) == len(record.recipe.ingredients)
        assert len(fs.instructions.row(i)) == len(record.recipe.instructions)
        assert query_texts(record) == [record.recipe.title]
    # a repeated text gets the same vector wherever it occurs
    first = records[0].recipe
    assert first is not None
    again = extract_features(towers, records[:1], views=1)
    np.testing.assert_allclose(again.ingredients.row(0), fs.ingredients.row(0), atol=1e-6)
    # augmented views differ from the evaluation view, view 0 is the plain image
    assert not np.allclose(fs.images[:, 0], fs.images[:, 1])
    np.testing.assert_allclose(
        fs.images[:, 0], towers.image_features([_img(r.image_path) for r in records]), atol=1e-5
    )


def _img(path):  # type: ignore[no-untyped-def]
    from models.images import load_image

    return load_image(path)


def test_cache_is_reused_and_serves_fewer_views(
    towers: CountingTowers, kfood_sample: Path, tmp_path: Path
) -> None:
    records = list(open_dataset(kfood_sample, "kfood"))[:4]
    first = extract_features(towers, records, views=3, cache_dir=tmp_path)
    seen = towers.images_seen
    cached = extract_features(towers, records, views=3, cache_dir=tmp_path)
    fewer = extract_features(towers, records, views=2, cache_dir=tmp_path)
    assert towers.images_seen == seen  # nothing re-encoded
    np.testing.assert_array_equal(cached.images, first.images)
    np.testing.assert_array_equal(fewer.images, first.images[:, :2])
    assert cached.labels == first.labels and cached.ids == first.ids
    extract_features(towers, records[:3], views=2, cache_dir=tmp_path)  # other records: a miss
    assert towers.images_seen > seen
    seen = towers.images_seen
    other_seed = extract_features(towers, records, views=2, seed=1, cache_dir=tmp_path)
    assert towers.images_seen > seen  # other augmentations: a miss, not seed 0's views
    np.testing.assert_array_equal(other_seed.images[:, 0], first.images[:, 0])


def test_ragged_take_keeps_rows() -> None:
    rows = [np.full((k, 2), k, np.float32) for k in (2, 0, 3)]
    ragged = Ragged.from_rows(rows, 2)
    assert len(ragged) == 3 and ragged.lengths().tolist() == [2, 0, 3]
    taken = ragged.take([2, 1])
    assert taken.lengths().tolist() == [3, 0]
    np.testing.assert_array_equal(taken.row(0), rows[2])


def test_feature_arrays_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grams = Ragged.from_rows([rng.normal(size=(n, 4)) for n in (2, 0, 3)], 4)
    features = PairedSetFeatures(
        ids=["a", "b"],
        regions=rng.normal(size=(2, 5, 8)).astype(np.float16),
        images=rng.normal(size=(2, 4)).astype(np.float32),
        texts=rng.normal(size=(3, 4)).astype(np.float32),
        owner=np.asarray([0, 0, 1]),
        grams=grams,
    )
    save_feature_arrays(tmp_path / "f.npz", features)
    back = load_feature_arrays(tmp_path / "f.npz", PairedSetFeatures)
    assert back.ids == ["a", "b"]
    for name in ("regions", "images", "texts", "owner"):
        np.testing.assert_array_equal(getattr(back, name), getattr(features, name))
        assert getattr(back, name).dtype == getattr(features, name).dtype
    np.testing.assert_array_equal(back.grams.values, grams.values)
    np.testing.assert_array_equal(back.grams.offsets, grams.offsets)
