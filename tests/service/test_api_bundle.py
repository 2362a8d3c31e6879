"""The service on a trained bundle: embed, fuse, index and search through MMSEARCH_MODEL=bundle:."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from index.layout import read_current
from service.app import create_app
from service.cli import main
from tests.bundles import save_tiny_base, train_args
from tests.service.helpers import b64, make_settings, wait_for

# The app serves bundles trained for these tests.
pytestmark = pytest.mark.slow

RECIPE = {"title": "김치찌개", "ingredients": ["김치", "돼지고기"], "instructions": ["끓인다."]}


@pytest.fixture(scope="module")
def bundle_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("service-bundle")
    out = root / "bundle"
    assert main(train_args(save_tiny_base(root), out, "--epochs", "5")) == 0
    return f"bundle:{out}"


@pytest.fixture(scope="module")
def index_dir(
    bundle_spec: str, kfood_sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    index_dir = tmp_path_factory.mktemp("bundle-index")
    args = ["index", str(kfood_sample), "--format", "kfood", "--index-dir", str(index_dir)]
    assert main([*args, "--model", bundle_spec]) == 0
    return index_dir


@pytest.fixture(scope="module")
def client(bundle_spec: str, index_dir: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(index_dir, model=bundle_spec))
    with TestClient(app) as client:
        wait_for(client, "/readyz", lambda r: r.status_code == 200)
        yield client


def test_bundle_is_the_model_of_embed_and_of_the_snapshot(
    client: TestClient, index_dir: Path
) -> None:
    assert client.get("/readyz").status_code == 200
    body = client.post("/embed", json={"inputs": [{"text": "비빔밥"}]}).json()
    assert body["dim"] == 32 and body["model"].startswith("bundle-")
    version = read_current(index_dir)
    manifest = json.loads((index_dir / str(version) / "manifest.json").read_text())
    assert manifest["model_fingerprint"] == body["model"]


def test_fused_embedding_of_several_modalities(client: TestClient, kfood_sample: Path) -> None:
    photo = b64(next((kfood_sample / "images").glob("*.jpg")).read_bytes())
    inputs = [{"image": photo}, {"recipe": RECIPE}]
    separate = np.asarray(client.post("/embed", json={"inputs": inputs}).json()["embeddings"])
    response = client.post("/embed", json={"inputs": inputs, "fuse": True})
    assert response.status_code == 200
    body = response.json()
    fused = np.asarray(body["embeddings"])
    assert body["fused"] is True and fused.shape == (1, 32)
    assert np.isclose(np.linalg.norm(fused), 1.0, atol=1e-5)
    assert not np.allclose(fused[0], separate[0]) and not np.allclose(fused[0], separate[1])


def test_photo_finds_its_own_item_and_recipes(client: TestClient, kfood_sample: Path) -> None:
    recipes = [json.loads(line) for line in (kfood_sample / "recipes.jsonl").open()]
    first = recipes[0]
    with open(kfood_sample / first["image"], "rb") as fp:
        files = {"file": ("dish.jpg", fp, "image/jpeg")}
        response = client.post("/search/image", files=files, data={"k": "3"})
    assert response.status_code == 200
    assert len(response.json()["matches"]) == 3
    assert response.json()["matches"][0]["id"] == first["id"]
    only_recipes = client.post(
        "/search", json={"query": {"image": b64((kfood_sample / first["image"]).read_bytes())},
                         "k": 5, "kinds": ["recipe"]}
    ).json()  # fmt: skip
    assert len(only_recipes["matches"]) == 5
    assert {m["kind"] for m in only_recipes["matches"]} == {"recipe"}


@pytest.fixture(scope="module")
def ensemble_spec(bundle_spec: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("service-ensemble")
    other = root / "other"
    assert main(train_args(save_tiny_base(root), other, "--epochs", "5", "--seed", "1")) == 0
    out = root / "ensemble"
    member = bundle_spec.removeprefix("bundle:")
    assert main(["ensemble", "--member", member, "--member", str(other), "--out", str(out)]) == 0
    return f"bundle:{out}"


def test_an_ensemble_serves_like_a_bundle(
    ensemble_spec: str, kfood_sample: Path, tmp_path: Path
) -> None:
    args = ["index", str(kfood_sample), "--format", "kfood", "--index-dir", str(tmp_path)]
    assert main([*args, "--model", ensemble_spec]) == 0
    first = json.loads((kfood_sample / "recipes.jsonl").open().readline())
    photo = b64((kfood_sample / first["image"]).read_bytes())
    with TestClient(create_app(make_settings(tmp_path, model=ensemble_spec))) as client:
        wait_for(client, "/readyz", lambda r: r.status_code == 200)
        body = client.post("/embed", json={"inputs": [{"image": photo}], "fuse": False}).json()
        assert body["dim"] == 64 and body["model"].startswith("ensemble-")
        fused = client.post(
            "/embed", json={"inputs": [{"image": photo}, {"recipe": RECIPE}], "fuse": True}
        ).json()
        assert np.isclose(np.linalg.norm(fused["embeddings"][0]), 1.0, atol=1e-5)
        found = client.post("/search", json={"query": {"image": photo}, "k": 3}).json()
        assert found["matches"][0]["id"] == first["id"]
