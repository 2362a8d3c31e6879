"""/search and /search/image with "similarity": "set": items ranked by the exact
smooth-Chamfer of their set rows (tiny random-init set heads), set rows never in single
search, and the 422s."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from index.build import build_snapshot
from index.snapshot import load_current
from models.images import decode_image
from models.set_similarity import smooth_chamfer
from service.app import create_app
from tests.index.sample_records import make_records, write_image
from tests.index.set_encoder import SetTinyEncoder
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import detail_text, make_settings

QUERY = {"text": "bibimbap served hot"}


@pytest.fixture(scope="module")
def set_encoder() -> SetTinyEncoder:
    return SetTinyEncoder()


@pytest.fixture(scope="module")
def set_index_dir(tmp_path_factory: pytest.TempPathFactory, set_encoder: SetTinyEncoder) -> Path:
    root = tmp_path_factory.mktemp("set-index")
    build_snapshot(make_records(root / "images", 40), set_encoder, root / "index", batch_size=16)
    return root / "index"


def _client(index_dir: Path, encoder: object) -> TestClient:
    settings = make_settings(index_dir, query_lexicon="none")
    return TestClient(create_app(settings, encoder=encoder))


@pytest.fixture(scope="module")
def client(set_index_dir: Path, set_encoder: SetTinyEncoder) -> Iterator[TestClient]:
    with _client(set_index_dir, set_encoder) as test_client:
        yield test_client


def _post(client: TestClient, **body: Any) -> Any:
    return client.post("/search", json={"query": QUERY, "top_classes": 0, **body})


def test_set_search_ranks_by_the_exact_smooth_chamfer(
    client: TestClient, set_index_dir: Path, set_encoder: SetTinyEncoder
) -> None:
    response = _post(client, k=8, similarity="set")
    assert response.status_code == 200, response.text
    matches = response.json()["matches"]
    assert [m["rank"] for m in matches] == list(range(1, 9))
    assert all(m["kind"].endswith("_set") for m in matches)
    assert_exact_ranking(matches, set_encoder.sets.text_sets([QUERY["text"]])[0], set_index_dir)


def assert_exact_ranking(matches: list[Any], query_set: np.ndarray, index_dir: Path) -> None:
    """The oracle: the query's set against every stored set, best set per item."""
    snap = load_current(index_dir)
    assert snap.sets is not None
    sets = torch.from_numpy(np.array(snap.sets.vectors).reshape(-1, snap.sets.slots, 32))
    scores = smooth_chamfer(torch.from_numpy(query_set), sets).numpy()
    best: dict[str, float] = {}
    for (item_id, _), score in zip(snap.sets.entries, scores, strict=True):
        best[item_id] = max(best.get(item_id, -np.inf), float(score))
    snap.close()
    expected = sorted(best, key=lambda i: -best[i])[: len(matches)]
    assert [m["id"] for m in matches] == expected
    np.testing.assert_allclose([m["score"] for m in matches], [best[i] for i in expected], 1e-4)


def test_single_search_never_returns_set_rows_and_stays_the_default(client: TestClient) -> None:
    default, single = _post(client, k=40), _post(client, k=40, similarity="single")
    assert default.status_code == single.status_code == 200
    assert default.json()["matches"] == single.json()["matches"]
    assert not any(m["kind"].endswith("_set") for m in default.json()["matches"])


def test_set_search_without_a_set_head_is_a_422(set_index_dir: Path) -> None:
    with _client(set_index_dir, TinyEncoder(dim=32, seed=0)) as plain:
        response = _post(plain, similarity="set")
    assert response.status_code == 422
    assert "no trained set head" in detail_text(response)


def test_set_search_on_a_snapshot_without_set_rows_is_a_422(tmp_path: Path) -> None:
    build_snapshot(make_records(tmp_path / "images", 6), TinyEncoder(32, 0), tmp_path / "index")
    with _client(tmp_path / "index", SetTinyEncoder()) as no_rows:
        response = _post(no_rows, similarity="set")
    assert response.status_code == 422
    assert "has no set rows" in detail_text(response)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ({"filter": {"cuisine": "x"}}, "filter"),
        ({"rank": "hybrid"}, "rank 'hybrid'"),
        ({"rerank": {"model": "sgraf", "top": 5}}, "rerank"),
        ({"query": {"vector": [1.0] * 32}}, "one text, image or recipe query"),
        ({"similarity": "sets"}, "similarity"),
    ],
)
def test_set_search_refuses_what_it_cannot_honour(
    client: TestClient, extra: dict[str, Any], said: str
) -> None:
    response = _post(client, **{"similarity": "set", **extra})
    assert response.status_code == 422
    assert said in detail_text(response)


# ---------------------------------------------------------------- /search/image (upload)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_image(tmp_path_factory.mktemp("query") / "query.png", seed=101).read_bytes()


def _upload(client: TestClient, photo: bytes, **form: str) -> Any:
    files = {"file": ("query.png", photo, "image/png")}
    return client.post("/search/image", files=files, data={"top_classes": "0", **form})


def test_upload_set_search_ranks_by_the_exact_smooth_chamfer(
    client: TestClient, set_index_dir: Path, set_encoder: SetTinyEncoder, photo: bytes
) -> None:
    response = _upload(client, photo, k="6", similarity="set")
    assert response.status_code == 200, response.text
    matches = response.json()["matches"]
    assert [m["rank"] for m in matches] == list(range(1, 7))
    assert all(m["kind"].endswith("_set") for m in matches)
    assert_exact_ranking(
        matches, set_encoder.sets.image_sets([decode_image(photo)])[0], set_index_dir
    )


def test_upload_single_search_stays_the_default(client: TestClient, photo: bytes) -> None:
    default, single = (
        _upload(client, photo, k="40"),
        _upload(client, photo, k="40", similarity="single"),
    )
    assert default.status_code == single.status_code == 200
    assert default.json()["matches"] == single.json()["matches"]
    assert not any(m["kind"].endswith("_set") for m in default.json()["matches"])


def test_upload_set_search_without_a_set_head_or_set_rows_is_a_422(
    set_index_dir: Path, tmp_path: Path, photo: bytes
) -> None:
    with _client(set_index_dir, TinyEncoder(dim=32, seed=0)) as plain:
        no_head = _upload(plain, photo, similarity="set")
    assert no_head.status_code == 422
    assert "no trained set head" in detail_text(no_head)
    build_snapshot(make_records(tmp_path / "images", 6), TinyEncoder(32, 0), tmp_path / "index")
    with _client(tmp_path / "index", SetTinyEncoder()) as no_rows_client:
        no_rows = _upload(no_rows_client, photo, similarity="set")
    assert no_rows.status_code == 422
    assert "has no set rows" in detail_text(no_rows)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ({"kinds": "image"}, "kinds"),
        ({"rank": "hybrid"}, "rank 'hybrid'"),
        ({"min_confidence": "0.5"}, "min_confidence"),
        ({"similarity": "sets"}, "similarity"),
    ],
)
def test_upload_set_search_refuses_what_it_cannot_honour(
    client: TestClient, photo: bytes, extra: dict[str, str], said: str
) -> None:
    response = _upload(client, photo, **{"similarity": "set", **extra})
    assert response.status_code == 422
    assert said in detail_text(response)
