"""GET /items/{id}."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def test_get_item_returns_label_metadata_and_kinds(
    client: TestClient, kfood_records: list[dict[str, Any]]
) -> None:
    record = kfood_records[1]
    response = client.get(f"/items/{record['id']}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == record["id"]
    assert body["metadata"]["title"] == record["title"]
    assert set(body["kinds"]) >= {"image", "recipe"}


def test_unknown_item_is_404_naming_it(client: TestClient) -> None:
    response = client.get("/items/no-such-dish")

    assert response.status_code == 404
    assert response.json() == {"detail": "no item with id 'no-such-dish' in the current index"}


def test_item_ids_may_contain_slashes(client: TestClient) -> None:
    response = client.get("/items/apple_pie/1005649")

    assert response.status_code == 404
    assert "'apple_pie/1005649'" in response.json()["detail"]
