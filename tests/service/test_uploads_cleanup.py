"""Uploaded photos are deleted once no kept snapshot and no pending change uses them
(after each publish and prune), and never while one does or while they are fresh."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from index.build import build_snapshot
from index.changes import ItemChange
from models.datasets import open_dataset
from models.types import CatalogRecord
from service.app import create_app
from service.pending import FilePendingChanges, remove_unused_uploads
from service.uploads import UPLOAD_GRACE_S, UPLOADS_DIR, save_upload
from tests.index.tiny_encoder import TinyEncoder
from tests.polling import poll
from tests.service.helpers import ADMIN_TOKEN, b64, image_bytes, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MAX_PIXELS = 10_000_000


@pytest.fixture()
def index_dir(tmp_path: Path, tiny_records: list[CatalogRecord]) -> Path:
    path = tmp_path / "index"
    build_snapshot(tiny_records, TinyEncoder(), path)
    return path


def _uploads(index_dir: Path) -> set[str]:
    return {path.name for path in (index_dir / UPLOADS_DIR).iterdir()}


def _age(path: Path) -> None:
    """As if saved two grace periods ago."""
    then = time.time() - 2 * UPLOAD_GRACE_S
    os.utime(path, (then, then))


def _finished(client: TestClient, response: Any) -> None:
    assert response.status_code == 202, response.text
    job = poll(
        lambda: client.get(response.headers["Location"], headers=AUTH).json(),
        lambda status: status["state"] in ("succeeded", "failed"),
        timeout_s=30,
    )
    assert job["state"] == "succeeded", job


def _put_photo(client: TestClient, index_dir: Path, color: tuple[int, int, int]) -> str:
    body = {"texts": ["bibimbap"], "image": b64(image_bytes(color))}
    _finished(client, client.put("/admin/items/new-1", json=body, headers=AUTH))
    for path in (index_dir / UPLOADS_DIR).iterdir():  # every upload so far is old now
        _age(path)
    return f"{hashlib.sha256(image_bytes(color)).hexdigest()}.png"


def test_a_photo_goes_once_the_last_snapshot_using_it_is_pruned(index_dir: Path) -> None:
    settings = make_settings(index_dir, keep_snapshots=1)
    with TestClient(create_app(settings, encoder=TinyEncoder())) as client:
        first = _put_photo(client, index_dir, (200, 30, 30))
        second = _put_photo(client, index_dir, (30, 200, 30))
        # The previous snapshot (kept: keep_snapshots=1) still shows the first photo.
        assert _uploads(index_dir) == {first, second}

        third = _put_photo(client, index_dir, (30, 30, 200))

        assert _uploads(index_dir) == {second, third}
        assert client.get("/images/new-1").content == image_bytes((30, 30, 200))


def test_a_pending_change_and_a_fresh_upload_keep_their_photos(index_dir: Path) -> None:
    settings = make_settings(index_dir)
    store = FilePendingChanges(index_dir / "pending.sqlite")
    pending_photo = save_upload(index_dir, image_bytes((1, 2, 3)), MAX_PIXELS)
    orphan = save_upload(index_dir, image_bytes((4, 5, 6)), MAX_PIXELS)
    fresh = save_upload(index_dir, image_bytes((7, 8, 9)), MAX_PIXELS)
    _age(pending_photo), _age(orphan)
    record = CatalogRecord("new-1", image_path=pending_photo, texts=("soup",))
    store.add([ItemChange("new-1", record, datetime.now(UTC))])

    remove_unused_uploads(settings, store)
    assert _uploads(index_dir) == {pending_photo.name, fresh.name}

    store.remove([entry.seq for entry in store.pending()])
    remove_unused_uploads(settings, store)
    assert _uploads(index_dir) == {fresh.name}


def test_saving_a_photo_again_makes_it_fresh(index_dir: Path) -> None:
    photo = save_upload(index_dir, image_bytes((1, 2, 3)), MAX_PIXELS)
    _age(photo)
    assert save_upload(index_dir, image_bytes((1, 2, 3)), MAX_PIXELS) == photo
    remove_unused_uploads(make_settings(index_dir), FilePendingChanges(index_dir / "p.sqlite"))
    assert photo.exists()


def test_a_reindex_that_drops_the_item_removes_its_photo(
    tmp_path: Path, kfood_sample: Path
) -> None:
    index_dir = tmp_path / "index"
    settings = make_settings(index_dir, keep_snapshots=0)
    build_snapshot(open_dataset(kfood_sample, "kfood"), TinyEncoder(), index_dir)
    with TestClient(create_app(settings, encoder=TinyEncoder())) as client:
        photo = _put_photo(client, index_dir, (90, 90, 10))
        assert _uploads(index_dir) == {photo}

        body = {"source": str(kfood_sample), "format": "kfood"}
        # The first publish cannot prune the snapshot the API still serves while it
        # builds; the second prunes it, and then its photo goes.
        for _ in range(2):
            _finished(client, client.post("/admin/reindex", json=body, headers=AUTH))

        assert client.get("/items/new-1").status_code == 404
    assert _uploads(index_dir) == set()
