"""A search by vector crosses to the threadpool once: for the FAISS search.

FastAPI runs every sync dependency in the threadpool; each crossing costs two
thread wake-ups (tens of microseconds idle, far more on a busy machine), so the
dependencies that only read app state are ``async def``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient


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


def test_vector_search_makes_one_threadpool_hop(
    tiny_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"query": {"vector": [1.0] + [0.0] * 31}, "k": 3}
    assert tiny_client.post("/search", json=body).status_code == 200  # warm: field scan etc.
    sent = count_hops(monkeypatch)

    response = tiny_client.post("/search", json=body)

    assert response.status_code == 200, response.text
    assert sent == ["search.<locals>.run"]


def test_healthz_makes_no_threadpool_hop(
    tiny_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = count_hops(monkeypatch)
    assert tiny_client.get("/healthz").status_code == 200
    assert sent == []
