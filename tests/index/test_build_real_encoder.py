"""The builder with the real offline encoder on twelve kfood recipes (slow, optional)."""

from __future__ import annotations

import pytest

from index.build import build_snapshot
from index.snapshot import load_current


@pytest.mark.slow
def test_kfood_sample_with_offline_encoder(kfood_sample, tmp_path_factory):
    datasets = pytest.importorskip("models.datasets")
    offline = pytest.importorskip("models.encoders.offline")
    encoder = offline.OfflineEncoder(device="cpu", cache_dir=tmp_path_factory.mktemp("cache"))
    dataset = datasets.open_dataset(kfood_sample, "kfood")
    index_dir = tmp_path_factory.mktemp("kfood-index")
    manifest = build_snapshot(
        dataset, encoder, index_dir, total=len(dataset), source=str(kfood_sample), fmt="kfood"
    )
    assert (manifest.n_items, manifest.skipped, manifest.dim) == (12, 0, encoder.dim)
    assert manifest.kinds["image"] == 12 and manifest.kinds["recipe"] == 12

    snap = load_current(index_dir, encoder.fingerprint)
    first = next(iter(dataset))
    query = encoder.encode_recipes([first.recipe])[0]
    best = snap.search(query, 3, kinds=["recipe"])[0]
    assert (best.item_id, best.kind) == (first.id, "recipe")
    assert best.score == pytest.approx(1.0, abs=1e-4)
    korean = snap.search(encoder.encode_texts([first.recipe.title])[0], 12)
    assert len(korean) == 12 and first.id in [m.item_id for m in korean[:3]]
