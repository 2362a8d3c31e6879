"""POST /search and /search/image on a real kfood snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.encoders import Encoder
from tests.service.helpers import b64, detail_text, image_bytes


@pytest.fixture(scope="module")
def client(client_per_backend: TestClient) -> TestClient:
    """Every test here runs on the FAISS and on the Milvus backend."""
    return client_per_backend


def _search(client: TestClient, query: dict[str, Any], **extra: Any) -> dict[str, Any]:
    response = client.post("/search", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def _ids(body: dict[str, Any]) -> list[str]:
    return [match["id"] for match in body["matches"]]


def _photo(kfood_sample: Path, record: dict[str, Any]) -> bytes:
    return (kfood_sample / record["image"]).read_bytes()


def test_text_search_returns_ranked_matches(client: TestClient) -> None:
    body = _search(client, {"text": "김치찌개"}, k=5)

    matches = body["matches"]
    assert 1 <= len(matches) <= 5
    assert [m["rank"] for m in matches] == list(range(1, len(matches) + 1))
    scores = [m["score"] for m in matches]
    assert scores == sorted(scores, reverse=True)
    assert set(matches[0]) >= {"id", "score", "rank", "kind", "metadata"}
    assert len(set(_ids(body))) == len(matches)  # one result per item
    assert body["index_version"]
    assert body["took_ms"] >= 0


def test_recipe_search_finds_the_same_recipe_first(
    client: TestClient, kfood_records: list[dict[str, Any]]
) -> None:
    record = kfood_records[3]
    recipe = {
        "title": record["title"],
        "ingredients": [i["name"] for i in record["ingredients"]],
        "instructions": record["instructions"],
    }
    body = _search(client, {"recipe": recipe}, k=3, kinds=["recipe"])

    assert body["matches"][0]["kind"] == "recipe"
    assert all(m["kind"] == "recipe" for m in body["matches"])


@pytest.mark.parametrize("position", [0, 5, 11])
def test_photo_finds_its_own_recipe_first(
    client: TestClient, kfood_sample: Path, kfood_records: list[dict[str, Any]], position: int
) -> None:
    record = kfood_records[position]
    response = client.post(
        "/search/image",
        files={"file": ("dish.jpg", _photo(kfood_sample, record), "image/jpeg")},
        data={"k": "3", "kinds": "image,recipe"},
    )

    assert response.status_code == 200, response.text
    top = response.json()["matches"][0]
    assert top["id"] == record["id"]
    assert top["rank"] == 1
    assert top["metadata"]["title"] == record["title"]


def test_base64_image_search_equals_upload(
    client: TestClient, kfood_sample: Path, kfood_records: list[dict[str, Any]]
) -> None:
    photo = _photo(kfood_sample, kfood_records[2])
    inline = _search(client, {"image": b64(photo)}, k=4)
    upload = client.post(
        "/search/image", files={"file": ("d.jpg", photo, "image/jpeg")}, data={"k": "4"}
    )

    assert _ids(inline) == _ids(upload.json())
    assert _ids(inline)[0] == kfood_records[2]["id"]


def test_vector_search_equals_text_search(client: TestClient) -> None:
    embedded = client.post("/embed", json={"inputs": [{"text": "된장찌개"}]}).json()
    by_vector = _search(client, {"vector": embedded["embeddings"][0]}, k=5)
    by_text = _search(client, {"text": "된장찌개"}, k=5)

    assert _ids(by_vector) == _ids(by_text)


def test_unnormalised_vector_is_accepted(client: TestClient, encoder: Encoder) -> None:
    vector = (np.arange(encoder.dim, dtype=np.float32) + 1.0) * 7.0
    body = _search(client, {"vector": vector.tolist()}, k=2)

    assert all(-1.0001 <= m["score"] <= 1.0001 for m in body["matches"])


@pytest.mark.parametrize("scale", [1e20, 3e38])
def test_huge_finite_vector_searches_like_its_direction(
    client: TestClient, encoder: Encoder, scale: float
) -> None:
    """Squaring these overflows float32; the query must still mean its direction."""
    direction = np.arange(encoder.dim, dtype=np.float32) + 1.0
    huge = _search(client, {"vector": (direction / direction.max() * scale).tolist()}, k=5)
    plain = _search(client, {"vector": direction.tolist()}, k=5)

    assert _ids(huge) == _ids(plain)
    assert [m["score"] for m in huge["matches"]] == pytest.approx(
        [m["score"] for m in plain["matches"]], abs=1e-5
    )


def test_item_search_excludes_the_item_itself(
    client: TestClient, kfood_records: list[dict[str, Any]]
) -> None:
    item_id = kfood_records[0]["id"]
    body = _search(client, {"item_id": item_id}, k=5)

    assert item_id not in _ids(body)
    assert len(body["matches"]) == 5


def test_kinds_restrict_the_matching_rows(client: TestClient) -> None:
    body = _search(client, {"text": "비빔밥"}, k=5, kinds=["image"])

    assert body["matches"]
    assert {m["kind"] for m in body["matches"]} == {"image"}


def test_filter_restricts_by_metadata(
    client: TestClient, kfood_records: list[dict[str, Any]]
) -> None:
    cuisine = kfood_records[0]["cuisine"]
    body = _search(client, {"text": "요리"}, k=12, filter={"cuisine": cuisine})

    expected = {r["id"] for r in kfood_records if r["cuisine"] == cuisine}
    assert set(_ids(body)) == expected


def test_wrong_vector_dimension_is_422_saying_expected_and_got(
    client: TestClient, encoder: Encoder
) -> None:
    response = client.post("/search", json={"query": {"vector": [0.5] * (encoder.dim - 1)}})

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert f"expected {encoder.dim}, got {encoder.dim - 1}" in detail


@pytest.mark.parametrize("bad", ["NaN", "Infinity"])
def test_non_finite_vector_is_422(client: TestClient, encoder: Encoder, bad: str) -> None:
    values = ", ".join(["0.1"] * (encoder.dim - 1) + [bad])
    response = client.post(
        "/search",
        content=f'{{"query": {{"vector": [{values}]}}}}',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert "finite" in detail_text(response)


def test_unknown_item_query_is_404(client: TestClient) -> None:
    response = client.post("/search", json={"query": {"item_id": "no-such-dish"}})

    assert response.status_code == 404
    assert "no-such-dish" in response.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"query": {}}, "give exactly one of text, image, recipe, vector, item_id"),
        ({"query": {"text": "a", "item_id": "b"}}, "(got text, item_id)"),
        ({"query": {"text": ""}}, "text must not be empty"),
        ({"query": {"text": "a"}, "k": 0}, "greater than or equal to 1"),
        ({"query": {"text": "a"}, "kinds": ["sound"]}, "sound"),
        ({"query": {"text": "a"}, "filter": ["cuisine"]}, "filter"),
        ({"query": {"text": "a"}, "filter": {"cuisine": {"near": 3}}}, "near"),
        ({"query": "kimchi"}, "query"),
    ],
)
def test_bad_search_body_is_422(client: TestClient, payload: dict[str, Any], expected: str) -> None:
    response = client.post("/search", json=payload)

    assert response.status_code == 422
    assert expected in detail_text(response)


def test_k_over_max_is_422(client: TestClient) -> None:
    response = client.post("/search", json={"query": {"text": "a"}, "k": 1001})

    assert response.status_code == 422
    assert "k must be between 1 and 1000" in response.json()["detail"]


@pytest.mark.parametrize("field", ["cuisine; DROP TABLE items", "1st"])
def test_malformed_filter_field_is_422(client: TestClient, field: str) -> None:
    response = client.post("/search", json={"query": {"text": "a"}, "filter": {field: "x"}})

    assert response.status_code == 422
    assert "invalid filter field" in response.json()["detail"]


def test_unknown_filter_field_is_422(client: TestClient) -> None:
    response = client.post("/search", json={"query": {"text": "a"}, "filter": {"spiciness": 3}})

    assert response.status_code == 422
    assert "spiciness" in response.json()["detail"]


def test_search_image_rejects_bad_form_fields(client: TestClient) -> None:
    file = {"file": ("d.png", image_bytes(), "image/png")}
    unknown_kind = client.post("/search/image", files=file, data={"kinds": "image,smell"})
    bad_k = client.post("/search/image", files=file, data={"k": "many"})

    assert unknown_kind.status_code == 422
    assert "smell" in unknown_kind.json()["detail"]
    assert bad_k.status_code == 422
    assert "k" in detail_text(bad_k)


def test_search_image_takes_k_from_the_url_or_the_form(
    client: TestClient, kfood_sample: Path, kfood_records: list[dict[str, Any]]
) -> None:
    def photo_search(url: str, data: dict[str, str]) -> Any:
        files = {"file": ("d.jpg", _photo(kfood_sample, kfood_records[1]), "image/jpeg")}
        return client.post(url, files=files, data=data)

    in_url = photo_search("/search/image?k=2", {})
    in_form = photo_search("/search/image", {"k": "2"})
    default = photo_search("/search/image", {})
    both_differ = photo_search("/search/image?k=2", {"k": "3"})

    assert len(in_url.json()["matches"]) == 2
    assert _ids(in_url.json()) == _ids(in_form.json())
    assert len(default.json()["matches"]) == min(10, len(kfood_records) * 2)
    assert both_differ.status_code == 422
    assert "twice" in both_differ.json()["detail"]


def test_search_image_rejects_corrupt_upload(client: TestClient) -> None:
    files = {"file": ("d.jpg", b"\xff\xd8\xff\xe0 definitely not a jpeg", "image/jpeg")}
    response = client.post("/search/image", files=files)

    assert response.status_code == 422
    assert "image" in response.json()["detail"]
