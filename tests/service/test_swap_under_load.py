"""Publishing new snapshots (and pruning old ones) under continuous search load fails no
request, on either index backend: on Milvus the collection of a snapshot a request still
holds is dropped only by a later prune."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from index.build import build_snapshot
from models.types import CatalogRecord
from service.app import create_app
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import make_settings, wait_for

SEARCH = {"query": {"text": "pizza served hot"}, "k": 5, "filter": {"cuisine": "양식"}}


def _search_until(stop: threading.Event, client: TestClient, seen: list[tuple[int, Any]]) -> None:
    while not stop.is_set():
        response = client.post("/search", json=SEARCH)
        seen.append((response.status_code, response.json().get("index_version")))


def test_publishing_under_search_load_fails_no_request(
    tmp_path: Path,
    tiny_encoder: TinyEncoder,
    tiny_records: list[CatalogRecord],
    backend_overrides: dict[str, Any],
) -> None:
    index_dir = tmp_path / "index"
    settings = make_settings(index_dir, **backend_overrides)
    backend = settings.vector_backend()
    build_snapshot(tiny_records, tiny_encoder, index_dir, backend=backend)
    seen: list[tuple[int, Any]] = []
    stop = threading.Event()
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        searchers = [
            threading.Thread(target=_search_until, args=(stop, client, seen)) for _ in range(2)
        ]
        for searcher in searchers:
            searcher.start()
        try:
            for _ in range(3):
                manifest = build_snapshot(
                    tiny_records, tiny_encoder, index_dir, backend=backend, keep_older=0
                )
                wait_for(
                    client,
                    "/readyz",
                    lambda r, v=manifest.version: r.json().get("index_version") == v,
                )
        finally:
            stop.set()
            for searcher in searchers:
                searcher.join()

    assert {status for status, _ in seen} == {200}, [s for s in seen if s[0] != 200][:3]
    assert len({version for _, version in seen}) >= 3  # the load did span the swaps
