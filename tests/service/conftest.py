"""Fixtures for the API tests: one encoder and one kfood snapshot per session, an
app (lifespan running) per module."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import service.tasks
import service.worker
from index.backends import IndexBackend
from index.build import build_snapshot
from index.prototypes import PrototypeOptions
from models.datasets import open_dataset
from models.encoders import Encoder
from models.types import CatalogRecord
from service.app import create_app
from service.tasks import encoder_for
from tests.index.sample_records import make_records
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import make_settings


@pytest.fixture(scope="session")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Encoder:
    """The real offline encoder (packaged weights, no network), loaded once.

    Loaded through the task module's per-process cache, so the in-process re-index
    jobs of the admin tests reuse it instead of loading a second copy.
    """
    return encoder_for(make_settings(tmp_path_factory.mktemp("unused-index")))


@pytest.fixture(scope="session")
def kfood_records(kfood_sample: Path) -> list[dict[str, Any]]:
    lines = (kfood_sample / "recipes.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="session")
def index_dir(
    tmp_path_factory: pytest.TempPathFactory, kfood_sample: Path, encoder: Encoder
) -> Path:
    path = tmp_path_factory.mktemp("index")
    build_snapshot(open_dataset(kfood_sample, "kfood"), encoder, path)
    return path


@pytest.fixture(scope="module")
def client(index_dir: Path, encoder: Encoder) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(index_dir), encoder=encoder)) as test_client:
        yield test_client


# --------------------------------------------------------------------------- both backends
# A test module runs on FAISS and on Milvus (Lite, embedded) by taking the fixtures
# below, or by overriding ``client`` / ``tiny_client`` with them.


@pytest.fixture(scope="session", params=["faiss", "milvus"])
def backend_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The Settings of each index backend: the parameter that runs a test on both."""
    if request.param == "faiss":
        return {}
    return {"index_backend": "milvus", "milvus_uri": request.getfixturevalue("milvus_uri")}


def _index_dir_on_backend(
    request: pytest.FixtureRequest,
    overrides: dict[str, Any],
    faiss_fixture: str,
    build: Callable[[Path, IndexBackend], Any],
) -> Path:
    """The FAISS suite's own snapshot, or the same catalog built into Milvus."""
    if not overrides:
        path: Path = request.getfixturevalue(faiss_fixture)
        return path
    path = request.getfixturevalue("tmp_path_factory").mktemp(f"{faiss_fixture}-milvus")
    build(path, make_settings(path, **overrides).vector_backend())
    return path


@pytest.fixture(scope="session")
def index_dir_per_backend(
    request: pytest.FixtureRequest, backend_overrides: dict[str, Any], kfood_sample: Path
) -> Path:
    def build(path: Path, backend: IndexBackend) -> None:
        encoder = request.getfixturevalue("encoder")
        build_snapshot(open_dataset(kfood_sample, "kfood"), encoder, path, backend=backend)

    return _index_dir_on_backend(request, backend_overrides, "index_dir", build)


@pytest.fixture(scope="module")
def client_per_backend(
    index_dir_per_backend: Path, encoder: Encoder, backend_overrides: dict[str, Any]
) -> Iterator[TestClient]:
    settings = make_settings(index_dir_per_backend, **backend_overrides)
    with TestClient(create_app(settings, encoder=encoder)) as test_client:
        yield test_client


# A small synthetic catalog served with the tiny random-projection encoder: fast, and
# its classes / metadata are known exactly (prototypes, tags, compose, filters tests).
TINY_ZERO_SHOT = {"tteokbokki": "spicy rice cakes"}


@pytest.fixture(scope="session")
def tiny_encoder() -> TinyEncoder:
    return TinyEncoder(dim=32, seed=0)


@pytest.fixture()
def tiny_job_encoder(monkeypatch: pytest.MonkeyPatch, tiny_encoder: TinyEncoder) -> TinyEncoder:
    """Re-index jobs (thread backend, in-process RQ worker) encode with the tiny encoder:
    the job tests check the queue, not the model, and need not load it."""
    for module in (service.tasks, service.worker):
        monkeypatch.setattr(module, "encoder_for", lambda _settings: tiny_encoder)
    return tiny_encoder


@pytest.fixture(scope="session")
def tiny_records(tmp_path_factory: pytest.TempPathFactory) -> list[CatalogRecord]:
    return make_records(tmp_path_factory.mktemp("tiny-images"), 60)


@pytest.fixture(scope="session")
def tiny_index_dir(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_records: list[CatalogRecord],
    tiny_encoder: TinyEncoder,
) -> Path:
    path = tmp_path_factory.mktemp("tiny-index")
    options = PrototypeOptions(zero_shot_classes=TINY_ZERO_SHOT)
    build_snapshot(tiny_records, tiny_encoder, path, prototypes=options)
    return path


@pytest.fixture(scope="module")
def tiny_client(tiny_index_dir: Path, tiny_encoder: TinyEncoder) -> Iterator[TestClient]:
    app = create_app(make_settings(tiny_index_dir), encoder=tiny_encoder)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def tiny_index_dir_per_backend(
    request: pytest.FixtureRequest,
    backend_overrides: dict[str, Any],
    tiny_records: list[CatalogRecord],
    tiny_encoder: TinyEncoder,
) -> Path:
    def build(path: Path, backend: IndexBackend) -> None:
        options = PrototypeOptions(zero_shot_classes=TINY_ZERO_SHOT)
        build_snapshot(tiny_records, tiny_encoder, path, prototypes=options, backend=backend)

    return _index_dir_on_backend(request, backend_overrides, "tiny_index_dir", build)


@pytest.fixture(scope="module")
def tiny_client_per_backend(
    tiny_index_dir_per_backend: Path, tiny_encoder: TinyEncoder, backend_overrides: dict[str, Any]
) -> Iterator[TestClient]:
    settings = make_settings(tiny_index_dir_per_backend, **backend_overrides)
    with TestClient(create_app(settings, encoder=tiny_encoder)) as test_client:
        yield test_client
