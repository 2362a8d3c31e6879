"""The shipped model (food-v1) is the default, is checked when loaded, and finds a
photo's own recipe through the API."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models import registry
from models.bundle import BundleEncoder, BundleError, load_bundle
from models.datasets import open_dataset
from service.app import create_app
from service.settings import Settings
from tests.polling import poll

pytestmark = pytest.mark.slow  # loads the real towers and indexes twelve photos

SHIPPED = registry.shipped_model_dir(registry.DEFAULT_MODEL)
# Of the twelve sample photos, how many must rank their own recipe first among the twelve
# (the model found its own recipe first for 81 % of all 430 kfood photos in the 430-recipe index).
MIN_OWN_RECIPE_AT_RANK_1 = 9


@pytest.fixture(scope="module")
def shipped() -> BundleEncoder:
    encoder = registry.load_encoder(Settings().model, device="cpu")
    assert isinstance(encoder, BundleEncoder)
    return encoder


def test_the_default_model_is_the_shipped_bundle(shipped: BundleEncoder) -> None:
    assert Settings().model == "food-v1"
    assert shipped.fingerprint == registry.SHIPPED_MODELS["food-v1"]
    assert shipped.calibration is not None
    meta = json.loads((SHIPPED / "bundle.json").read_text())
    assert meta["weights_dtype"] == "float16"
    size = sum(f.stat().st_size for f in SHIPPED.iterdir())
    assert size <= 40 * 1024 * 1024


def test_changed_weights_are_refused_by_their_sha256(tmp_path: Path) -> None:
    copy = shutil.copytree(SHIPPED, tmp_path / "food-v1")
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy)


def test_a_shipped_model_with_another_fingerprint_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = shutil.copytree(SHIPPED, tmp_path / "food-v1")
    meta = json.loads((copy / "bundle.json").read_text())
    meta["image_tta"] = "flip"  # same weights, other vectors: another fingerprint
    (copy / "bundle.json").write_text(json.dumps(meta))
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ValueError, match="files were changed"):
        registry.load_encoder("food-v1", device="cpu")


@pytest.fixture(scope="module")
def client(
    shipped: BundleEncoder, kfood_sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    from index.build import build_snapshot

    index_dir = tmp_path_factory.mktemp("shipped-index")
    build_snapshot(open_dataset(kfood_sample, "kfood"), shipped, index_dir)
    # Default settings but the index dir: the app loads food-v1 by itself.
    app = create_app(Settings(index_dir=index_dir, device="cpu"))  # type: ignore[call-arg]
    with TestClient(app) as test_client:
        ready = poll(
            lambda: test_client.get("/readyz"), lambda r: r.status_code == 200, timeout_s=180
        )
        assert ready.status_code == 200, ready.text
        yield test_client


def test_photos_find_their_own_recipes_through_the_api(
    client: TestClient, kfood_sample: Path
) -> None:
    ready = client.get("/readyz").json()
    assert ready["model_name"] == "food-v1"
    assert ready["model"] == registry.SHIPPED_MODELS["food-v1"]
    records = list(open_dataset(kfood_sample, "kfood"))
    top1 = 0
    for record in records:
        assert record.image_path is not None
        response = client.post(
            "/search/image",
            files={"file": ("dish.jpg", record.image_path.read_bytes(), "image/jpeg")},
            data={"kinds": "recipe", "k": "3"},
        )
        assert response.status_code == 200, response.text
        matches = response.json()["matches"]
        assert all(0.0 <= m["confidence"] <= 1.0 for m in matches)
        top1 += matches[0]["id"] == record.id
    assert top1 >= MIN_OWN_RECIPE_AT_RANK_1, f"{top1} of {len(records)} at rank 1"
