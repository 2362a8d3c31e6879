"""Bounds on one request's inputs (issue #18, items 3 and 4), through the ASGI app."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.schemas import MAX_TEXT_CHARS
from service.settings import Settings
from tests.service.helpers import ADMIN_TOKEN, detail_text

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_a_text_over_the_limit_is_422_and_the_limit_is_in_the_schema(
    tiny_client: TestClient,
) -> None:
    response = tiny_client.post("/embed", json={"inputs": [{"text": "x" * (MAX_TEXT_CHARS + 1)}]})
    schema = tiny_client.get("/openapi.json").json()["components"]["schemas"]

    assert response.status_code == 422 and "string_too_long" in detail_text(response)
    assert {"maxLength": MAX_TEXT_CHARS, "type": "string"} in schema["EmbedInput"]["properties"][
        "text"
    ]["anyOf"]


def test_the_texts_of_one_request_are_capped_in_total(tiny_client: TestClient) -> None:
    limit = Settings.model_fields["max_request_text_chars"].default
    n = limit // MAX_TEXT_CHARS + 1
    texts = [{"text": "kimchi " * (MAX_TEXT_CHARS // 7)} for _ in range(n)]
    recipes = [{"recipe": {"title": "t", "ingredients": ["x" * 8000] * 3}}]

    too_many = tiny_client.post("/embed", json={"inputs": texts})
    long_recipe = tiny_client.post("/embed", json={"inputs": recipes})
    fine = tiny_client.post("/embed", json={"inputs": texts[:1]})

    for response in (too_many, long_recipe):
        assert response.status_code == 422, response.text
        assert f"at most {limit}" in detail_text(response)
    assert fine.status_code == 200


def test_an_any_of_filter_with_a_thousand_values_works(tiny_client: TestClient) -> None:
    cuisines = [f"none-{i}" for i in range(999)] + ["한식"]
    body = {"query": {"text": "stew"}, "filter": {"cuisine": cuisines}, "k": 50}

    response = tiny_client.post("/search", json=body)
    too_many = tiny_client.post(
        "/search", json={**body, "filter": {"cuisine": [*cuisines, "양식"]}}
    )

    assert response.status_code == 200, response.text
    matches = response.json()["matches"]
    assert matches and {m["metadata"]["cuisine"] for m in matches} == {"한식"}
    assert too_many.status_code == 422 and "too_long" in detail_text(too_many)


def test_lone_surrogates_are_422_wherever_they_are(tiny_client: TestClient) -> None:
    bodies = [
        ("/search", '{"query": {"tag": "\\udc00"}}'),
        ("/search", '{"query": {"text": "a"}, "filter": {"cuisine": ["\\ud800"]}}'),
        ("/search", '{"query": {"text": "a"}, "filter": {"cuisine": [1, 2.5, "\\ud800"]}}'),
        ("/embed", '{"inputs": [{"recipe": {"title": "t", "ingredients": ["\\ud83d"]}}]}'),
    ]
    for path, body in bodies:
        response = tiny_client.post(
            path, content=body.encode(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 422 and "surrogate" in detail_text(response), body


def test_an_unusable_reindex_source_is_422(tiny_client: TestClient) -> None:
    for source in ("a" * 300, "x/" * 2100):
        response = tiny_client.post(
            "/admin/reindex", json={"source": source, "format": "kfood"}, headers=AUTH
        )
        assert response.status_code == 422, response.text
