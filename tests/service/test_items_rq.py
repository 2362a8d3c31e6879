"""Item changes on Redis: recorded by the API before its 202, applied by workers, and
never lost when a worker dies mid-apply."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from rq.job import Job

from index.build import build_snapshot
from index.changes import ItemChange
from index.layout import read_current
from index.manifest import Manifest
from models.types import CatalogRecord
from service.app import create_app
from service.jobs import REINDEX_RETRIES, JobState, RQJobQueue
from service.pending import RedisPendingChanges
from service.settings import Settings
from service.worker import run_worker
from tests.index.tiny_encoder import TinyEncoder
from tests.polling import poll
from tests.service.helpers import ADMIN_TOKEN, rq_settings_of_own_queue
from tests.service.jobs_support import (
    kill_process,
    log_tail,
    running,
    service_env,
    wait_for_status,
    wait_until_finished,
    worker_log_on_failure,
)
from tests.service.tiny_worker import DELAY_ENV

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TINY_WORKER = [sys.executable, "-m", "tests.service.tiny_worker"]
START_TIMEOUT_S = 240  # a worker process's start (torch import) on a busy 2-core CPU
RECOVERY_TIMEOUT_S = 240  # heartbeat expiry + registry maintenance + the apply
SLOW_ENCODE_S = 60  # the first worker's encode calls: it is killed inside one


@pytest.fixture()
def settings(clean_redis: str, tmp_path: Path, tiny_records: list[CatalogRecord]) -> Settings:
    index_dir = tmp_path / "index"
    build_snapshot(tiny_records, TinyEncoder(), index_dir)
    return rq_settings_of_own_queue(index_dir, clean_redis)


@pytest.fixture()
def client(settings: Settings, tiny_encoder: TinyEncoder) -> Iterator[TestClient]:
    with TestClient(create_app(settings, encoder=tiny_encoder)) as test_client:
        yield test_client


def _pending(settings: Settings) -> list[str]:
    store = RedisPendingChanges(redis.Redis.from_url(settings.redis_url or ""), settings.queue_name)
    try:
        return [entry.change.item_id for entry in store.pending()]
    finally:
        store.close()


def _top(client: TestClient, text: str) -> str:
    body = {"query": {"text": text}, "k": 1, "kinds": ["text"]}
    response = client.post("/search", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["matches"][0]["id"])


def _put_soup(client: TestClient) -> Any:
    body = {"texts": ["rice cake soup for the new year"], "label": "soup"}
    response = client.put("/admin/items/new-1", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def test_a_worker_applies_what_the_api_recorded(
    client: TestClient, settings: Settings, tiny_job_encoder: TinyEncoder
) -> None:
    job_id = _put_soup(client)
    assert _pending(settings) == ["new-1"]  # recorded before the 202

    assert run_worker(settings, burst=True)

    status = RQJobQueue(settings).status(job_id)
    assert status is not None and status.state is JobState.SUCCEEDED, status
    assert status.index_version == read_current(settings.index_dir)
    assert _pending(settings) == []
    served = poll(lambda: _top(client, "rice cake soup"), lambda top: top == "new-1", timeout_s=10)
    assert served == "new-1"


@pytest.mark.slow
def test_a_worker_killed_mid_apply_loses_nothing(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    live = read_current(settings.index_dir)
    job_id = _put_soup(client)
    queue = RQJobQueue(settings)
    env = service_env(settings)

    first_log = tmp_path / "worker-1.log"
    slow_env = {**env, DELAY_ENV: str(SLOW_ENCODE_S)}
    with running(TINY_WORKER, slow_env, first_log) as first_worker:
        with worker_log_on_failure(first_log):
            wait_for_status(
                queue, job_id, lambda s: s.state is JobState.RUNNING, timeout_s=START_TIMEOUT_S
            )
        time.sleep(2)  # inside the slow encode of the new item
        kill_process(first_worker)

    # The dead attempt published nothing, and the change is still recorded.
    assert read_current(settings.index_dir) == live
    assert _pending(settings) == ["new-1"]
    assert _top(client, "rice cake soup") != "new-1"

    second_log = tmp_path / "worker-2.log"
    with running(TINY_WORKER, env, second_log), worker_log_on_failure(second_log):
        status = wait_until_finished(queue, job_id, timeout_s=RECOVERY_TIMEOUT_S)

    assert status.state is JobState.SUCCEEDED, f"{status}\n{log_tail(second_log)}"
    assert status.index_version == read_current(settings.index_dir) != live
    assert _pending(settings) == []
    served = poll(lambda: _top(client, "rice cake soup"), lambda top: top == "new-1", timeout_s=10)
    assert served == "new-1"
    job = Job.fetch(job_id, connection=redis.Redis.from_url(settings.redis_url or ""))
    assert job.retries_left == REINDEX_RETRIES - 1  # the killed attempt, then this one
    queue.close()


def test_an_api_start_queues_a_job_for_changes_left_pending(
    settings: Settings, tiny_encoder: TinyEncoder, tiny_job_encoder: TinyEncoder
) -> None:
    """Changes whose job ran out of its retries get a job at the next API start."""
    store = RedisPendingChanges(redis.Redis.from_url(settings.redis_url or ""), settings.queue_name)
    record = CatalogRecord("new-1", texts=("rice cake soup",), label="soup")
    store.add([ItemChange("new-1", record, datetime.now(UTC))])
    store.close()

    with TestClient(create_app(settings, encoder=tiny_encoder)):
        assert run_worker(settings, burst=True)  # False: the queue was empty

    assert _pending(settings) == []
    live = Manifest.read(settings.index_dir / (read_current(settings.index_dir) or ""))
    assert live.changes["items_embedded"] == 1
