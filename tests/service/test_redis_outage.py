"""A Redis outage (issue #18, item 5), on a private Redis the tests start and kill.

The API answers a JSON 503 on the admin routes and reports /readyz degraded (200:
search still works); the worker process outlives an outage during a job and takes
the next job once Redis is back. The shared Redis on 6379 is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from service.app import create_app
from service.jobs import JobState, RQJobQueue
from service.reindex import ReindexRequest
from tests.e2e.test_end_to_end import free_port
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import ADMIN_TOKEN, make_settings
from tests.service.jobs_support import log_tail, mmsearch_command, running, service_env

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
START_TIMEOUT_S = 180.0

pytestmark = pytest.mark.e2e


class PrivateRedis:
    """redis-server on a port of its own, without persistence: a restart starts empty."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary, self.port = binary, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "private redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture()
def private_redis() -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is required under CI but is not installed")
        pytest.skip("redis-server not installed")
    server = PrivateRedis(binary, free_port())
    server.start()
    yield server
    server.kill()


def test_admin_routes_answer_a_json_503_and_readyz_degrades(
    private_redis: PrivateRedis, tiny_index_dir: Path, tiny_encoder: TinyEncoder, tmp_path: Path
) -> None:
    settings = make_settings(tiny_index_dir, redis_url=private_redis.url)
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        assert client.get("/readyz").json()["status"] == "ready"
        private_redis.kill()

        reindex = client.post(
            "/admin/reindex", json={"source": str(tmp_path), "format": "kfood"}, headers=AUTH
        )
        job = client.get("/admin/jobs/some-job", headers=AUTH)
        ready = client.get("/readyz")
        search = client.post("/search", json={"query": {"text": "stew"}})

        for response in (reindex, job):
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/json"
            assert (
                "Redis" in response.json()["detail"] and "unreachable" in response.json()["detail"]
            )
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded" and "Redis" in ready.json()["detail"]
        assert search.status_code == 200

        private_redis.start()
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and ready["detail"] is None


def wait_for_state(
    queue: RQJobQueue, job_id: str, states: set[JobState], timeout_s: float
) -> JobState | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = queue.status(job_id)
        if status is not None and status.state in states:
            return status.state
        time.sleep(0.05)
    return None


@pytest.mark.slow
def test_the_worker_survives_an_outage_during_a_job(
    private_redis: PrivateRedis, kfood_sample: Path, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path / "index", model="openclip:mmsearch-tiny-vit", redis_url=private_redis.url
    )
    log = tmp_path / "worker.log"
    with running([*mmsearch_command(), "worker"], service_env(settings), log) as worker:
        queue = RQJobQueue(settings, batch_size=2)
        first = queue.enqueue_reindex(ReindexRequest(source=kfood_sample, format="kfood"))
        started = wait_for_state(queue, first, {JobState.RUNNING}, START_TIMEOUT_S)
        assert started is JobState.RUNNING, log_tail(log)

        private_redis.kill()  # mid-job; the job ends while Redis is away
        time.sleep(8)
        assert worker.poll() is None, log_tail(log)
        private_redis.start()  # empty: the first job is gone with the old data

        second = queue.enqueue_reindex(ReindexRequest(source=kfood_sample, format="kfood"))
        done = wait_for_state(queue, second, {JobState.SUCCEEDED, JobState.FAILED}, 120)
        assert done is JobState.SUCCEEDED, log_tail(log)
        assert worker.poll() is None, log_tail(log)
        queue.close()
