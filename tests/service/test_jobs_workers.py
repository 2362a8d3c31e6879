"""Real ``mmsearch worker`` processes (the tiny encoder in place of the model):
a worker killed mid-build, and two workers racing to publish.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue, Worker

from index.layout import list_versions, read_current
from service.jobs import ABANDONED_CHECK_INTERVAL_S, JobState, JobStatus, RQJobQueue
from service.reindex import ReindexRequest, reindex
from service.settings import Settings
from service.worker import HEARTBEAT_TTL_S
from tests.conftest import write_kfood_sample
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import rq_settings_of_own_queue
from tests.service.jobs_support import (
    kill_process,
    log_tail,
    running,
    service_env,
    start_process,
    stop_process,
    wait_for_status,
    wait_until_finished,
)
from tests.service.tiny_worker import DELAY_ENV

WORKER_START_S = 90  # imports on a busy 2-core machine
BATCH_SIZE = 2  # many small steps: progress shows early, the build lasts


@pytest.fixture()
def settings(clean_redis: str, tmp_path: Path) -> Settings:
    return rq_settings_of_own_queue(tmp_path / "index", clean_redis)


@pytest.fixture()
def queue(settings: Settings) -> Iterator[RQJobQueue]:
    jobs = RQJobQueue(settings, batch_size=BATCH_SIZE)
    yield jobs
    jobs.close()


def tiny_worker(settings: Settings, delay_s: float) -> tuple[list[str], dict[str, str]]:
    env = {**service_env(settings), DELAY_ENV: str(delay_s)}
    return [sys.executable, "-m", "tests.service.tiny_worker"], env


def wait_for_workers(settings: Settings, n: int) -> None:
    connection = redis.Redis.from_url(settings.redis_url or "")
    rq_queue = Queue(settings.queue_name, connection=connection)
    deadline = time.monotonic() + WORKER_START_S
    while len(Worker.all(queue=rq_queue)) < n:
        assert time.monotonic() < deadline, f"{n} workers did not start"
        time.sleep(0.2)


def staging_dirs(settings: Settings) -> list[Path]:
    return sorted(settings.index_dir.glob(".staging-*"))


def test_killed_workers_job_leaves_running_in_bounded_time_and_its_staging_goes_at_restart(
    settings: Settings, queue: RQJobQueue, kfood_sample: Path, tmp_path: Path
) -> None:
    # Live snapshot from another model (seed): the job must encode every item, and so last,
    # instead of copying the unchanged items' vectors (incremental re-index).
    other_model = TinyEncoder(seed=1)
    live = reindex(ReindexRequest(kfood_sample, "kfood"), settings, other_model).version
    job_id = queue.enqueue_reindex(ReindexRequest(kfood_sample, "kfood"))
    args, env = tiny_worker(settings, delay_s=1.0)
    log = tmp_path / "worker-1.log"
    with running(args, env, log) as worker:
        try:
            wait_for_status(queue, job_id, lambda s: s.progress > 0, timeout_s=WORKER_START_S)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_tail(log)}") from exc
        kill_process(worker)
    killed_at = time.monotonic()
    dead_staging = staging_dirs(settings)
    assert len(dead_staging) == 1  # the killed build's leftovers

    # No worker is alive: the API's own status reads notice the dead worker.
    requeued = wait_for_status(
        queue, job_id, lambda s: s.state is not JobState.RUNNING, timeout_s=120
    )
    # Within a heartbeat TTL (the last beat may be up to one interval old) and a check.
    assert time.monotonic() - killed_at <= HEARTBEAT_TTL_S + ABANDONED_CHECK_INTERVAL_S + 5
    assert requeued.state is JobState.QUEUED and requeued.progress == 0.0  # a retry waits
    assert read_current(settings.index_dir) == live

    args, env = tiny_worker(settings, delay_s=0.0)
    log = tmp_path / "worker-2.log"
    with running(args, env, log):
        status = wait_until_finished(queue, job_id, timeout_s=WORKER_START_S + 60)
        assert not dead_staging[0].exists()  # removed when the worker started, not an hour later
    assert status.state is JobState.SUCCEEDED, f"{status}\n{log_tail(log)}"
    assert read_current(settings.index_dir) == status.index_version != live
    assert staging_dirs(settings) == []


def test_two_workers_an_older_request_finishing_last_does_not_replace_the_newer(
    settings: Settings, queue: RQJobQueue, shared_data: Path, tmp_path: Path
) -> None:
    big = write_kfood_sample(shared_data / "kfood", tmp_path / "big", 24)
    small = write_kfood_sample(shared_data / "kfood", tmp_path / "small", 2)
    args, env = tiny_worker(settings, delay_s=0.3)
    workers = [start_process(args, env, tmp_path / f"worker-{i}.log") for i in (1, 2)]
    try:
        wait_for_workers(settings, 2)
        older = queue.enqueue_reindex(ReindexRequest(big, "kfood"))
        wait_for_status(queue, older, lambda s: s.progress > 0, timeout_s=WORKER_START_S)
        newer = queue.enqueue_reindex(ReindexRequest(small, "kfood"))  # requested later
        newer_status = wait_until_finished(queue, newer, timeout_s=120)
        assert newer_status.state is JobState.SUCCEEDED, newer_status
        still_running = queue.status(older)
        older_status = wait_until_finished(queue, older, timeout_s=180)
    finally:
        for worker in workers:
            stop_process(worker)
    logs = "\n".join(log_tail(tmp_path / f"worker-{i}.log") for i in (1, 2))

    assert isinstance(still_running, JobStatus) and still_running.state is JobState.RUNNING
    assert older_status.state is JobState.FAILED, f"{older_status}\n{logs}"
    assert older_status.error is not None and "superseded" in older_status.error
    assert read_current(settings.index_dir) == newer_status.index_version
    assert list_versions(settings.index_dir) == [newer_status.index_version]
