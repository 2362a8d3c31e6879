"""A search by vector crosses to the threadpool at most once: for the FAISS search,
and not even then once its measured cost is under MMSEARCH_INLINE_SEARCH_MS
(service.search_placement); a batch of item changes decodes all its photos in one
crossing.

FastAPI runs every sync dependency in the threadpool; each crossing costs two
thread wake-ups (tens of microseconds idle, far more on a busy machine), so the
dependencies that only read app state are ``async def``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from index.build import build_snapshot
from models.types import CatalogRecord
from service.app import create_app
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import ADMIN_TOKEN, b64, image_bytes, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def hop_name(func: Callable[..., Any]) -> str:
    """What a hop runs: FastAPI sends a partial of the dependency or endpoint."""
    while isinstance(func, functools.partial):
        func = func.keywords.get("function", func.func)
    return getattr(func, "__qualname__", repr(func))


def count_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the functions sent to the threadpool from now on."""
    sent: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        sent.append(hop_name(func))
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    return sent


VECTOR_BODY = {"query": {"vector": [1.0] + [0.0] * 31}, "k": 3}


def test_short_vector_search_runs_inline_once_measured(
    tiny_index_dir: Path, tiny_encoder: TinyEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An app of its own (the shared client's searches are measured already), and a
    # budget no tiny search exceeds even on a busy machine.
    settings = make_settings(tiny_index_dir, inline_search_ms=1000.0)
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        sent = count_hops(monkeypatch)
        first = client.post("/search", json=VECTOR_BODY)  # not measured yet: threadpool
        second = client.post("/search", json=VECTOR_BODY)  # measured short: inline
        hops = list(sent)

    assert first.status_code == second.status_code == 200, first.text
    assert hops == ["SearchPlacement.run.<locals>.timed"]
    assert first.json()["matches"] == second.json()["matches"]


def test_vector_search_makes_one_hop_without_an_inline_budget(
    tiny_index_dir: Path, tiny_encoder: TinyEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tiny_index_dir, inline_search_ms=0.0)
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        assert client.post("/search", json=VECTOR_BODY).status_code == 200  # warm
        sent = count_hops(monkeypatch)

        response = client.post("/search", json=VECTOR_BODY)
        hops = list(sent)  # before the app's shutdown adds its own

    assert response.status_code == 200, response.text
    assert hops == ["SearchPlacement.run.<locals>.timed"]


def test_restricted_search_stays_in_the_threadpool(
    tiny_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {**VECTOR_BODY, "kinds": ["image"]}
    for _ in range(3):  # measured searches do not move a restricted one inline
        assert tiny_client.post("/search", json=VECTOR_BODY).status_code == 200
    sent = count_hops(monkeypatch)

    response = tiny_client.post("/search", json=body)

    assert response.status_code == 200, response.text
    assert sent == ["SearchPlacement.run.<locals>.timed"]


def test_healthz_makes_no_threadpool_hop(
    tiny_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = count_hops(monkeypatch)
    assert tiny_client.get("/healthz").status_code == 200
    assert sent == []


@pytest.fixture()
def items_client(tmp_path: Path, tiny_records: list[CatalogRecord]) -> Iterator[TestClient]:
    """An index of its own: the batch route queues changes to it."""
    index_dir = tmp_path / "index"
    build_snapshot(tiny_records, TinyEncoder(), index_dir)
    with TestClient(create_app(make_settings(index_dir), encoder=TinyEncoder())) as client:
        yield client


def _upsert(item_id: str, image: str) -> dict[str, Any]:
    return {"id": item_id, "texts": ["rice cake soup"], "image": image}


def test_a_batch_decodes_its_photos_in_one_threadpool_hop(
    items_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = [b64(image_bytes((40 * i, 90, 20))) for i in range(3)]
    body = {"upserts": [_upsert(f"new-{i}", photo) for i, photo in enumerate(photos)]}
    sent = count_hops(monkeypatch)

    response = items_client.post("/admin/items/batch", json=body, headers=AUTH)

    assert response.status_code == 202, response.text
    assert [name for name in sent if "upsert" in name] == ["upsert_changes"]


def test_a_bad_photo_in_a_batch_gets_the_error_a_single_put_gets(
    items_client: TestClient,
) -> None:
    bad = b64(b"plain text, not an image")
    body = {"upserts": [_upsert("new-0", b64(image_bytes())), _upsert("new-1", bad)]}
    batch = items_client.post("/admin/items/batch", json=body, headers=AUTH)
    single_body = {"texts": ["rice cake soup"], "image": bad}
    single = items_client.put("/admin/items/new-1", json=single_body, headers=AUTH)
    assert single.status_code == 422, single.text
    assert (batch.status_code, batch.json()) == (single.status_code, single.json())
