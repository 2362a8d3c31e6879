"""The pending item change stores (SQLite file, Redis): order kept, and removing what
was applied leaves a newer change to the same item pending."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from index.changes import ItemChange
from models.types import CatalogRecord
from service.pending import FilePendingChanges, PendingChanges, RedisPendingChanges


@pytest.fixture(params=["file", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PendingChanges]:
    if request.param == "file":
        yield FilePendingChanges(tmp_path / "pending.sqlite")
        return
    url = request.getfixturevalue("clean_redis")
    redis_store = RedisPendingChanges(redis.Redis.from_url(url), f"test-{uuid.uuid4().hex[:8]}")
    yield redis_store
    redis_store.close()


def _put(item_id: str, text: str) -> ItemChange:
    return ItemChange(item_id, CatalogRecord(item_id, texts=(text,)), datetime.now(UTC))


def test_changes_come_back_in_order_and_survive_a_partial_remove(store: PendingChanges) -> None:
    store.add([_put("a", "first"), ItemChange("b", None, datetime.now(UTC))])
    applied = store.pending()
    store.add([_put("a", "second")])  # arrives while the first two are being applied

    store.remove([entry.seq for entry in applied])

    left = store.pending()
    assert [(e.change.item_id, e.change.record) for e in applied] == [
        ("a", CatalogRecord("a", texts=("first",))),
        ("b", None),
    ]
    assert len(left) == 1 and left[0].change.record == CatalogRecord("a", texts=("second",))
    assert left[0].seq > max(entry.seq for entry in applied)


def test_a_new_store_on_the_same_redis_sees_the_changes(clean_redis: str) -> None:
    """What the API recorded, a worker (another connection, another process) reads."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    api = RedisPendingChanges(redis.Redis.from_url(clean_redis), queue)
    worker = RedisPendingChanges(redis.Redis.from_url(clean_redis), queue)
    api.add([_put("a", "soup")])
    assert [entry.change.item_id for entry in worker.pending()] == ["a"]
    api.close()
    worker.close()


def test_a_new_file_store_on_the_same_file_sees_the_changes(tmp_path: Path) -> None:
    """What an API accepted, the API restarted on the same index folder still has."""
    before = FilePendingChanges(tmp_path / "pending.sqlite")
    before.add([_put("a", "soup"), ItemChange("b", None, datetime.now(UTC))])
    before.remove([before.pending()[0].seq])
    after = FilePendingChanges(tmp_path / "pending.sqlite")
    assert [entry.change.item_id for entry in after.pending()] == ["b"]
    after.add([_put("c", "noodles")])
    assert [entry.seq for entry in after.pending()] == [2, 3]  # never a removed number
