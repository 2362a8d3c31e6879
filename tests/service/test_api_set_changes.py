"""Set search ("similarity": "set") keeps answering after PUT / DELETE /admin/items: the
new snapshot carries set rows (tiny random-init set heads), without the deleted item,
with the new one found by its own photo and text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from index.build import build_snapshot
from service.app import create_app
from tests.index.sample_records import make_records, write_image
from tests.index.set_encoder import CountingSetTinyEncoder, SetTinyEncoder
from tests.polling import poll
from tests.service.helpers import ADMIN_TOKEN, b64, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
N_ITEMS = 16
JEON_TEXT = "zucchini pancake, crispy and golden"


@pytest.fixture()
def encoder() -> CountingSetTinyEncoder:
    return CountingSetTinyEncoder()


@pytest.fixture()
def client(tmp_path: Path, encoder: CountingSetTinyEncoder) -> Iterator[TestClient]:
    index_dir = tmp_path / "index"
    build_snapshot(make_records(tmp_path / "images", N_ITEMS), SetTinyEncoder(), index_dir)
    settings = make_settings(index_dir, query_lexicon="none")
    with TestClient(create_app(settings, encoder=encoder)) as test_client:
        yield test_client


def _finished(client: TestClient, response: Any) -> None:
    assert response.status_code == 202, response.text
    job = poll(
        lambda: client.get(response.headers["Location"], headers=AUTH).json(),
        lambda body: body["state"] in ("succeeded", "failed"),
        timeout_s=30.0,
    )
    assert job["state"] == "succeeded", job


def _set_ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    matches = response.json()["matches"]
    assert matches and all(m["kind"].endswith("_set") for m in matches)
    return [m["id"] for m in matches]


def test_set_search_answers_after_a_put_and_a_delete(
    client: TestClient, encoder: CountingSetTinyEncoder, tmp_path: Path
) -> None:
    photo = write_image(tmp_path / "jeon.png", seed=999).read_bytes()
    body = {"texts": [JEON_TEXT], "image": b64(photo), "label": "jeon"}

    _finished(client, client.put("/admin/items/new-1", json=body, headers=AUTH))
    _finished(client, client.delete("/admin/items/item-4", headers=AUTH))

    # Only the new item's photo and text were given to the set heads (not the catalog's).
    assert encoder.set_inputs["image"] == 1 and encoder.set_inputs["recipe"] == 0
    query = {"query": {"text": JEON_TEXT}, "k": N_ITEMS, "top_classes": 0, "similarity": "set"}
    by_text = _set_ids(client.post("/search", json=query))
    assert by_text[0] == "new-1" and "item-4" not in by_text
    assert len(by_text) == N_ITEMS  # 16 - 1 + 1 items, each once
    files = {"file": ("jeon.png", photo, "image/png")}
    form = {"k": "3", "top_classes": "0", "similarity": "set"}
    assert _set_ids(client.post("/search/image", files=files, data=form))[0] == "new-1"
