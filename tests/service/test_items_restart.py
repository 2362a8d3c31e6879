"""Item changes without Redis survive an API restart: accepted (202) changes are in
the index folder's pending store, and the restarted API queues a job for them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from index.build import build_snapshot
from models.types import CatalogRecord
from service.app import create_app
from service.pending import PENDING_FILE, FilePendingChanges
from tests.index.tiny_encoder import TinyEncoder
from tests.polling import poll
from tests.service.helpers import ADMIN_TOKEN, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DEADLINE_S = 30.0


class DyingEncoder(TinyEncoder):
    """Fails every encode once ``dead``: the apply job fails as if the API had died
    before it ran (its changes are not applied)."""

    dead = False

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.dead:
            raise RuntimeError("the API process died")
        return super().encode_texts(texts)


@pytest.fixture()
def index_dir(tmp_path: Path, tiny_records: list[CatalogRecord]) -> Path:
    path = tmp_path / "index"
    build_snapshot(tiny_records, TinyEncoder(), path)
    return path


def _job_state(client: TestClient, response: object) -> str:
    url = response.headers["Location"]  # type: ignore[attr-defined]
    job = poll(
        lambda: client.get(url, headers=AUTH).json(),
        lambda body: body["state"] in ("succeeded", "failed"),
        timeout_s=DEADLINE_S,
    )
    return str(job["state"])


def test_an_accepted_change_is_applied_after_a_restart(index_dir: Path) -> None:
    settings = make_settings(index_dir)
    dying = DyingEncoder()
    with TestClient(create_app(settings, encoder=dying)) as client:
        dying.dead = True
        put = client.put("/admin/items/new-1", json={"texts": ["rice cake soup"]}, headers=AUTH)
        assert put.status_code == 202, put.text
        assert _job_state(client, put) == "failed"
    assert [e.change.item_id for e in FilePendingChanges(index_dir / PENDING_FILE).pending()] == [
        "new-1"
    ]

    with TestClient(create_app(settings, encoder=TinyEncoder())) as client:
        item = poll(
            lambda: client.get("/items/new-1"), lambda r: r.status_code == 200, timeout_s=DEADLINE_S
        )
        assert item.status_code == 200, item.text
        assert item.json()["kinds"] == ["text"]
    assert FilePendingChanges(index_dir / PENDING_FILE).pending() == []
