"""The real thing: ``mmsearch serve`` (uvicorn) + ``mmsearch worker`` + Redis, over HTTP.

A first re-index is posted and followed to success; every indexed dish photo must
find its own recipe first. Then a second re-index runs while a client keeps
searching: the new version must get served and no request may fail meanwhile.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests.conftest import write_kfood_sample
from tests.polling import poll
from tests.service.helpers import ADMIN_TOKEN, make_settings
from tests.service.jobs_support import log_tail, mmsearch_command, running, service_env

FIRST_SAMPLE = 24
SECOND_SAMPLE = 16  # a different catalog, so the version (and item count) changes
START_TIMEOUT_S = 240  # process start and model load on a busy 2-core CPU
JOB_TIMEOUT_S = 300
SWAP_TIMEOUT_S = 60  # hot swap after the job succeeded (event, else CURRENT poll)
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Service:
    http: httpx.Client
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def diagnostics(self) -> str:
        return "\n".join(f"--- {log.name}\n{log_tail(log)}" for log in self.logs)

    def check_alive(self) -> None:
        for process, log in zip(self.processes, self.logs, strict=True):
            if process.poll() is not None:
                raise AssertionError(
                    f"{log.stem} exited ({process.returncode})\n{self.diagnostics()}"
                )


@pytest.fixture()
def service(clean_redis: str, tmp_path: Path) -> Iterator[Service]:
    port = free_port()
    settings: Settings = make_settings(
        tmp_path / "index",
        redis_url=clean_redis,
        queue_name=f"e2e-{uuid.uuid4().hex[:8]}",
        reload_interval_s=2.0,
    )
    env = service_env(settings)
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    serve = [*mmsearch_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with (
        running(serve, env, api_log) as api,
        running([*mmsearch_command(), "worker"], env, worker_log) as worker,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http,
    ):
        running_service = Service(http, [api, worker], [api_log, worker_log])
        wait_for_health(running_service)
        yield running_service


def wait_for_health(service: Service) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        service.check_alive()
        try:
            if service.http.get("/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.5)
    raise AssertionError(f"/healthz not OK within {START_TIMEOUT_S}s\n{service.diagnostics()}")


def reindex(service: Service, source: Path) -> dict[str, Any]:
    """POST /admin/reindex and follow the job until it ends; returns the final job."""
    body = {"source": str(source), "format": "kfood"}
    accepted = service.http.post("/admin/reindex", json=body, headers=AUTH)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        service.check_alive()
        job = service.http.get(f"/admin/jobs/{job_id}", headers=AUTH).json()
        if job["state"] in ("succeeded", "failed"):
            assert job["state"] == "succeeded", f"{job}\n{service.diagnostics()}"
            assert job["progress"] == 1.0
            return dict(job)
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not finished in {JOB_TIMEOUT_S}s\n{service.diagnostics()}")


def search_photo(http: httpx.Client, photo: Path) -> httpx.Response:
    with open(photo, "rb") as image:
        files = {"file": (photo.name, image, "image/jpeg")}
        return http.post("/search/image", files=files, data={"k": "3", "kinds": "image,recipe"})


def wait_until_serving(service: Service, version: str) -> None:
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    while time.monotonic() < deadline:
        ready = service.http.get("/readyz")
        if ready.status_code == 200 and ready.json().get("index_version") == version:
            return
        time.sleep(0.2)
    raise AssertionError(f"version {version} not served within {SWAP_TIMEOUT_S}s")


def recipes(sample: Path) -> list[dict[str, Any]]:
    lines = (sample / "recipes.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@dataclass
class SearchLoad:
    """A client thread that searches until stopped (bounded) and records every outcome."""

    base_url: str
    photo: Path
    versions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    max_requests: int = 2000

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as http:
            for _ in range(self.max_requests):
                if self.stop.is_set():
                    return
                self.search_once(http)

    def search_once(self, http: httpx.Client) -> None:
        try:
            response = search_photo(http, self.photo)
        except httpx.HTTPError as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
            return
        if response.status_code != 200:
            self.failures.append(f"{response.status_code}: {response.text[:200]}")
        else:
            self.versions.append(response.json()["index_version"])


def test_reindex_then_search_then_hot_swap_under_load(
    service: Service, shared_data: Path, tmp_path: Path
) -> None:
    first = write_kfood_sample(shared_data / "kfood", tmp_path / "first", FIRST_SAMPLE)
    second = write_kfood_sample(shared_data / "kfood", tmp_path / "second", SECOND_SAMPLE)

    first_version = reindex(service, first)["index_version"]
    wait_until_serving(service, first_version)

    for recipe in recipes(first):
        response = search_photo(service.http, first / recipe["image"])
        assert response.status_code == 200, response.text
        top = response.json()["matches"][0]
        assert (top["id"], top["rank"]) == (recipe["id"], 1), recipe["title"]

    load = SearchLoad(str(service.http.base_url), first / recipes(first)[0]["image"])
    client = threading.Thread(target=load.run, daemon=True)
    client.start()
    try:
        # The second catalog is the first one's first 16 items: their vectors are copied,
        # not encoded, so its job can end within one search; see the old version first.
        poll(lambda: load.versions or load.failures, bool, timeout_s=SWAP_TIMEOUT_S)
        second_job = reindex(service, second)
        second_version = second_job["index_version"]
        assert second_version != first_version
        deadline = time.monotonic() + SWAP_TIMEOUT_S
        while second_version not in load.versions and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        load.stop.set()
        client.join(60)

    assert not client.is_alive()
    assert load.failures == []
    removed = FIRST_SAMPLE - SECOND_SAMPLE
    assert second_job["changes"]["items_reused"] == SECOND_SAMPLE, second_job
    assert (second_job["changes"]["items_embedded"], second_job["changes"]["items_removed"]) == (
        0,
        removed,
    )
    assert first_version in load.versions and second_version in load.versions
    assert load.versions[-1] == second_version
    # Once swapped, never back: versions are served in order.
    swap_at = load.versions.index(second_version)
    assert set(load.versions[swap_at:]) == {second_version}
