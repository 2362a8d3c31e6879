"""PUT / DELETE /admin/items and the batch form, through the in-process job thread:
changes are served by search, prototypes follow, queued changes make one snapshot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from index.build import build_snapshot
from index.changes import changes_lock
from index.layout import list_versions
from index.manifest import Manifest
from index.prototypes import PrototypeOptions
from models.types import CatalogRecord
from service.app import create_app
from tests.index.tiny_encoder import CountingEncoder
from tests.polling import poll
from tests.service.conftest import TINY_ZERO_SHOT
from tests.service.helpers import ADMIN_TOKEN, b64, image_bytes, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DEADLINE_S = 30.0


@pytest.fixture()
def encoder() -> CountingEncoder:
    return CountingEncoder(dim=32, seed=0)


@pytest.fixture()
def backend_name() -> str:
    """FAISS; the core cases run on Milvus Lite too (parametrised with ON_BOTH)."""
    return "faiss"


ON_BOTH = pytest.mark.parametrize("backend_name", ["faiss", "milvus"])


@pytest.fixture()
def overrides(backend_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    if backend_name == "faiss":
        return {}
    request.getfixturevalue("milvus_uri")  # skipped without the milvus extra
    return {"index_backend": "milvus", "milvus_uri": str(tmp_path / "items.db")}


@pytest.fixture()
def index_dir(tmp_path: Path, tiny_records: list[CatalogRecord], overrides: dict[str, Any]) -> Path:
    """A catalog of its own per test: every test changes it."""
    path = tmp_path / "index"
    options = PrototypeOptions(zero_shot_classes=TINY_ZERO_SHOT)
    backend = make_settings(path, **overrides).vector_backend()
    build_snapshot(tiny_records, CountingEncoder(), path, prototypes=options, backend=backend)
    return path


@pytest.fixture()
def client(
    index_dir: Path, encoder: CountingEncoder, overrides: dict[str, Any]
) -> Iterator[TestClient]:
    settings = make_settings(index_dir, keep_snapshots=20, **overrides)
    with TestClient(create_app(settings, encoder=encoder)) as test_client:
        yield test_client


def _finished(client: TestClient, response: Any) -> dict[str, Any]:
    """The job a change request queued, once it finished (it must succeed)."""
    assert response.status_code == 202, response.text
    job_url = response.headers["Location"]
    job = poll(
        lambda: client.get(job_url, headers=AUTH).json(),
        lambda body: body["state"] in ("succeeded", "failed"),
        timeout_s=DEADLINE_S,
    )
    assert job["state"] == "succeeded", job
    return job


def _top(client: TestClient, text: str, k: int = 1) -> list[str]:
    body = {"query": {"text": text}, "k": k, "kinds": ["text"]}
    response = client.post("/search", json=body)
    assert response.status_code == 200, response.text
    return [match["id"] for match in response.json()["matches"]]


def _classes(client: TestClient) -> dict[str, int]:
    return {c["name"]: c["members"] for c in client.get("/classes").json()["classes"]}


def _put(client: TestClient, item_id: str, body: dict[str, Any]) -> Any:
    return client.put(f"/admin/items/{item_id}", json=body, headers=AUTH)


JEON = {
    "texts": ["zucchini pancake, crispy and golden"],
    "image": b64(image_bytes((30, 160, 60))),
    "label": "jeon",
    "metadata": {"cuisine": "한식", "minutes": 15},
}


@ON_BOTH
def test_put_is_served_by_search_and_makes_its_class(client: TestClient) -> None:
    assert _top(client, "zucchini pancake crispy") != ["new-1"]

    job = _finished(client, _put(client, "new-1", JEON))

    assert _top(client, "zucchini pancake crispy") == ["new-1"]
    item = client.get("/items/new-1").json()
    assert item["metadata"] == JEON["metadata"] and sorted(item["kinds"]) == ["image", "text"]
    assert client.get("/images/new-1").content == image_bytes((30, 160, 60))
    assert _classes(client)["jeon"] == 1
    assert job["changes"]["items_embedded"] == 1


@ON_BOTH
def test_put_replacing_an_item_changes_what_search_returns(
    client: TestClient, tiny_records: list[CatalogRecord]
) -> None:
    target = tiny_records[3]
    old_text = target.texts[0]
    assert target.id in _top(client, old_text, k=3)

    _finished(client, _put(client, target.id, {"texts": ["grilled mackerel with rice"]}))

    assert _top(client, "grilled mackerel with rice") == [target.id]
    assert target.id not in _top(client, old_text, k=3)
    assert client.get(f"/items/{target.id}").json()["kinds"] == ["text"]


@ON_BOTH
def test_delete_removes_the_item_and_its_class_follows(
    client: TestClient, tiny_records: list[CatalogRecord]
) -> None:
    pizzas = [r.id for r in tiny_records if r.label == "pizza"]
    assert _classes(client)["pizza"] == len(pizzas)

    _finished(client, client.delete(f"/admin/items/{pizzas[0]}", headers=AUTH))

    assert client.get(f"/items/{pizzas[0]}").status_code == 404
    deleted = next(r for r in tiny_records if r.id == pizzas[0])
    assert pizzas[0] not in _top(client, deleted.texts[0], k=5)
    assert _classes(client)["pizza"] == len(pizzas) - 1

    batch = {"deletes": pizzas[1:]}
    _finished(client, client.post("/admin/items/batch", json=batch, headers=AUTH))

    assert "pizza" not in _classes(client)  # its last member went


@ON_BOTH
def test_changes_queued_together_make_one_snapshot_encoding_only_them(
    client: TestClient, index_dir: Path, encoder: CountingEncoder, tiny_records: list[CatalogRecord]
) -> None:
    versions = list_versions(index_dir)
    # An apply job waits for this lock, so all four changes are pending when it runs.
    with changes_lock(index_dir):
        responses = [
            _put(client, "new-1", JEON),
            _put(client, "new-2", {"texts": ["sweet rice punch"], "label": "drink"}),
            _put(client, tiny_records[0].id, {"texts": ["cold buckwheat noodles"]}),
            client.delete(f"/admin/items/{tiny_records[1].id}", headers=AUTH),
        ]
    jobs = [_finished(client, response) for response in responses]

    assert len(list_versions(index_dir)) == len(versions) + 1
    assert {job["index_version"] for job in jobs} == {list_versions(index_dir)[-1]}
    # Three texts and one photo were encoded (and the zero-shot class names, which
    # the prototype table embeds on every build); every other item's rows were copied.
    assert encoder.inputs == {"image": 1, "text": 3 + len(TINY_ZERO_SHOT), "recipe": 0}
    applied = jobs[0]["changes"]
    assert applied["items_embedded"] == 3
    assert applied["items_reused"] == len(tiny_records) - 2
    assert applied["items_removed"] == 1
    assert _top(client, "sweet rice punch") == ["new-2"]


@pytest.mark.parametrize("backend_name", ["milvus"])
def test_on_milvus_changes_update_the_live_collection_in_place(
    client: TestClient,
    index_dir: Path,
    overrides: dict[str, Any],
    tiny_records: list[CatalogRecord],
) -> None:
    store = make_settings(index_dir, **overrides).vector_backend().milvus
    assert store is not None
    first = Manifest.read(index_dir / list_versions(index_dir)[-1])
    for text in ("grilled mackerel with rice", "cold buckwheat noodles"):
        _finished(client, _put(client, tiny_records[3].id, {"texts": [text]}))
        live = Manifest.read(index_dir / list_versions(index_dir)[-1])
        assert _top(client, text) == [tiny_records[3].id]
        # The same collection, as many rows as the live snapshot: no copy, no growth.
        assert live.collection == first.collection and live.collection is not None
        assert store.count(live.collection) == live.n_vectors
        assert store.client.list_collections() == [first.collection]


def test_delete_of_an_unknown_item_is_404(client: TestClient) -> None:
    response = client.delete("/admin/items/nope", headers=AUTH)
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]
    batch = client.post("/admin/items/batch", json={"deletes": ["nope"]}, headers=AUTH)
    assert batch.status_code == 404


def test_an_item_put_but_not_applied_yet_can_be_deleted(
    client: TestClient, index_dir: Path
) -> None:
    with changes_lock(index_dir):
        put = _put(client, "new-1", {"texts": ["rice cake soup"]})
        delete = client.delete("/admin/items/new-1", headers=AUTH)
        again = client.delete("/admin/items/new-1", headers=AUTH)
    assert (put.status_code, delete.status_code, again.status_code) == (202, 202, 404)
    _finished(client, delete)
    assert client.get("/items/new-1").status_code == 404


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"image": "not base64 !!"}, "not valid base64"),
        ({"image": b64(b"plain text, not an image")}, "image"),
        ({"texts": ["  "]}, "needs an input"),
        ({"texts": ["a"], "metadata": {"x": float("nan")}}, "plain JSON"),
        ({"texts": ["a"], "colour": "red"}, "colour"),
    ],
)
def test_bad_item_is_422(client: TestClient, body: dict[str, Any], expected: str) -> None:
    response = client.put(
        "/admin/items/x", content=_json(body), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert expected in response.text


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body)  # allow_nan: Python's JSON (and FastAPI's parser) take NaN


def test_batch_repeating_an_id_is_422(client: TestClient) -> None:
    body = {"upserts": [{"id": "a", "texts": ["x"]}], "deletes": ["a"]}
    response = client.post("/admin/items/batch", json=body, headers=AUTH)
    assert response.status_code == 422 and "repeated" in response.text


def test_item_changes_need_the_token(client: TestClient) -> None:
    for response in (
        client.put("/admin/items/new-1", json=JEON),
        client.delete("/admin/items/item-1"),
        client.post("/admin/items/batch", json={"deletes": ["item-1"]}),
        _put_with(client, "wrong-token"),
    ):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"


def _put_with(client: TestClient, token: str) -> Any:
    return client.put("/admin/items/new-1", json=JEON, headers={"Authorization": f"Bearer {token}"})


def test_no_live_index_is_409(tmp_path: Path, encoder: CountingEncoder) -> None:
    with TestClient(create_app(make_settings(tmp_path / "empty"), encoder=encoder)) as client:
        response = _put(client, "new-1", JEON)
    assert response.status_code == 409
    assert "need a live index" in response.json()["detail"]
