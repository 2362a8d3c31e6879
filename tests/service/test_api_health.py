"""Probes, readiness while the model loads or no snapshot exists, and hot swap."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import service.state
from index.build import build_snapshot
from models.datasets import open_dataset
from models.encoders import Encoder
from service.app import create_app
from service.events import publish_snapshot_event
from tests.service.helpers import DEADLINE_S, make_settings, wait_for


def test_healthz_and_readyz_with_model_and_snapshot(client: TestClient, encoder: Encoder) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")

    assert ready.status_code == 200
    body = ready.json()
    assert body["model"] == encoder.fingerprint
    assert body["index_version"]
    assert body["items"] == 12


def test_no_snapshot_is_503_until_one_is_published(
    tmp_path: Path, kfood_sample: Path, encoder: Encoder
) -> None:
    app = create_app(make_settings(tmp_path), encoder=encoder)
    with TestClient(app) as client:
        ready = client.get("/readyz")
        search = client.post("/search", json={"query": {"text": "김치"}})
        item = client.get("/items/kfood-1")

        assert client.get("/healthz").status_code == 200
        assert ready.status_code == 503
        assert ready.json()["model"] == encoder.fingerprint
        assert "no index snapshot" in ready.json()["detail"]
        assert "mmsearch index" in ready.json()["detail"]
        for response in (search, item):
            assert response.status_code == 503
            assert "no index snapshot" in response.json()["detail"]
        # /embed needs no snapshot.
        assert client.post("/embed", json={"inputs": [{"text": "김치"}]}).status_code == 200

        three = list(itertools.islice(open_dataset(kfood_sample, "kfood"), 3))
        manifest = build_snapshot(three, encoder, tmp_path)
        ready = wait_for(client, "/readyz", lambda r: r.status_code == 200)

        assert ready.status_code == 200
        assert ready.json()["index_version"] == manifest.version
        assert ready.json()["items"] == 3
        search = client.post("/search", json={"query": {"text": "김치"}})
        assert search.status_code == 200
        assert search.json()["index_version"] == manifest.version


def _blocking_loader(release: threading.Event, encoder: Encoder) -> Callable[..., Encoder]:
    def load(*_args: Any, **_kwargs: Any) -> Encoder:
        release.wait(DEADLINE_S)
        return encoder

    return load


def test_requests_before_the_model_is_loaded_are_503(
    monkeypatch: pytest.MonkeyPatch, index_dir: Path, encoder: Encoder
) -> None:
    release = threading.Event()
    monkeypatch.setattr(service.state, "load_encoder", _blocking_loader(release, encoder))
    with TestClient(create_app(make_settings(index_dir))) as client:
        try:
            ready = client.get("/readyz")
            search = client.post("/search", json={"query": {"text": "김치"}})
            embed = client.post("/embed", json={"inputs": [{"text": "김치"}]})
            health = client.get("/healthz")
        finally:
            release.set()
        ready_later = wait_for(client, "/readyz", lambda r: r.status_code == 200)

    assert health.status_code == 200
    assert ready.status_code == 503
    assert "is still loading" in ready.json()["detail"]
    for response in (search, embed):
        assert response.status_code == 503
        assert "model 'offline' is still loading" in response.json()["detail"]
    assert ready_later.status_code == 200


def test_model_that_fails_to_load_keeps_the_process_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken_loader(*_args: Any, **_kwargs: Any) -> Encoder:
        raise ValueError("unknown encoder spec 'nonsense'")

    monkeypatch.setattr(service.state, "load_encoder", broken_loader)
    with TestClient(create_app(make_settings(tmp_path, model="nonsense"))) as client:
        ready = wait_for(client, "/readyz", lambda r: "failed" in r.json()["detail"])
        search = client.post("/search", json={"query": {"text": "김치"}})

        assert client.get("/healthz").status_code == 200
    assert ready.status_code == 503
    assert "failed to load" in ready.json()["detail"]
    assert "unknown encoder spec" in ready.json()["detail"]
    assert search.status_code == 503


def test_snapshot_event_swaps_without_waiting_for_the_poll(
    clean_redis: str, tmp_path: Path, kfood_sample: Path, encoder: Encoder
) -> None:
    """With Redis, a published event refreshes at once (the CURRENT poll is an hour)."""
    settings = make_settings(tmp_path, redis_url=clean_redis, reload_interval_s=3600.0)
    with TestClient(create_app(settings, encoder=encoder)) as client:
        assert client.get("/readyz").status_code == 503
        subscription = client.app.state.mmsearch.snapshot_events  # type: ignore[attr-defined]
        assert subscription.wait_subscribed(DEADLINE_S)

        two = list(itertools.islice(open_dataset(kfood_sample, "kfood"), 2))
        manifest = build_snapshot(two, encoder, tmp_path)
        publish_snapshot_event(clean_redis, manifest.version)
        ready = wait_for(client, "/readyz", lambda r: r.status_code == 200)

    assert ready.status_code == 200
    assert ready.json()["index_version"] == manifest.version
