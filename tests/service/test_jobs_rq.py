"""The Redis backend: jobs on an RQ queue, run by a worker, status read from Redis."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import StartedJobRegistry

from index.layout import read_current
from service.events import subscribe_snapshot_events
from service.jobs import REINDEX_RETRIES, JobOutcome, JobState, RQJobQueue, create_job_queue
from service.reindex import ReindexRequest
from service.settings import Settings
from service.worker import run_worker
from tests.service.helpers import rq_settings_of_own_queue


@pytest.fixture()
def rq_settings(clean_redis: str, tmp_path: Path) -> Settings:
    return rq_settings_of_own_queue(tmp_path / "index", clean_redis)


def _not_in_process(request: ReindexRequest, progress: object) -> JobOutcome:
    raise AssertionError("with Redis, jobs run on workers")


@pytest.fixture()
def rq_queue(rq_settings: Settings) -> Iterator[RQJobQueue]:
    queue = create_job_queue(rq_settings, in_process=_not_in_process)
    assert isinstance(queue, RQJobQueue)
    yield queue
    queue.close()


def test_job_runs_on_a_worker_and_any_process_reads_its_status(
    rq_settings: Settings, rq_queue: RQJobQueue, kfood_sample: Path
) -> None:
    announced: list[str] = []
    got_event = threading.Event()

    def on_version(version: str) -> None:
        announced.append(version)
        got_event.set()

    events = subscribe_snapshot_events(rq_settings.redis_url or "", on_version)
    try:
        assert events.wait_subscribed(10)
        job_id = rq_queue.enqueue_reindex(ReindexRequest(source=kfood_sample, format="kfood"))
        other_api = RQJobQueue(rq_settings)  # another API process's view of the same job
        queued = other_api.status(job_id)
        assert queued is not None and queued.state is JobState.QUEUED and queued.progress == 0.0

        assert run_worker(rq_settings, burst=True)

        status = RQJobQueue(rq_settings).status(job_id)
        assert got_event.wait(10)
    finally:
        events.close()
    assert status is not None and status.state is JobState.SUCCEEDED, status
    assert status.progress == 1.0 and status.error is None
    assert status.index_version == read_current(rq_settings.index_dir)
    assert announced == [status.index_version]
    assert status.changes is not None  # the worker's counts, read back from job.meta
    assert status.changes["items_embedded"] == 12 and status.changes["items_removed"] == 0


def test_failing_job_is_retried_then_failed_with_a_short_error(
    rq_settings: Settings, rq_queue: RQJobQueue, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-catalog"
    job_id = rq_queue.enqueue_reindex(ReindexRequest(source=missing, format="kfood"))

    run_worker(rq_settings, burst=True)

    status = rq_queue.status(job_id)
    assert status is not None and status.state is JobState.FAILED
    assert status.error is not None and "no-such-catalog" in status.error
    assert "Traceback" not in status.error and "\n" not in status.error
    job = Job.fetch(job_id, connection=redis.Redis.from_url(rq_settings.redis_url or ""))
    assert job.retries_left == 0  # every retry was spent
    assert read_current(rq_settings.index_dir) is None


def test_unknown_or_foreign_job_has_no_status(rq_settings: Settings, rq_queue: RQJobQueue) -> None:
    assert rq_queue.status("no-such-job") is None
    other_queue = RQJobQueue(rq_settings.model_copy(update={"queue_name": "someone-else"}))
    foreign_id = other_queue.enqueue_reindex(ReindexRequest(Path("/nowhere"), "kfood"))
    assert rq_queue.status(foreign_id) is None
    other_queue.close()


def test_abandoned_job_without_retries_left_fails_with_a_clear_error(
    rq_settings: Settings, rq_queue: RQJobQueue, kfood_sample: Path
) -> None:
    """What RQ's registry maintenance does once a dead worker's last retry is spent."""
    connection = redis.Redis.from_url(rq_settings.redis_url or "")
    job_id = rq_queue.enqueue_reindex(ReindexRequest(source=kfood_sample, format="kfood"))
    job = Job.fetch(job_id, connection=connection)
    job.retries_left = 0
    job.save()
    job.set_status(RQStatus.STARTED)
    queue = Queue(rq_settings.queue_name, connection=connection)
    registry = StartedJobRegistry(queue=queue)
    connection.zadd(registry.key, {f"{job_id}:dead-execution": 1})  # heartbeat long expired

    registry.cleanup()

    status = rq_queue.status(job_id)
    assert status is not None and status.state is JobState.FAILED
    assert status.error is not None and "worker running this job died" in status.error


def test_reading_status_requeues_a_dead_workers_job_without_any_worker_alive(
    rq_settings: Settings, rq_queue: RQJobQueue, kfood_sample: Path
) -> None:
    """The API runs RQ's abandoned-job clean-up itself: no live worker is needed."""
    connection = redis.Redis.from_url(rq_settings.redis_url or "")
    job_id = rq_queue.enqueue_reindex(ReindexRequest(source=kfood_sample, format="kfood"))
    job = Job.fetch(job_id, connection=connection)
    job.meta["progress"] = 0.4  # what the dead attempt had reached
    job.save_meta()
    job.set_status(RQStatus.STARTED)
    registry = StartedJobRegistry(queue=Queue(rq_settings.queue_name, connection=connection))
    connection.zadd(registry.key, {f"{job_id}:dead-execution": 1})  # heartbeat long expired

    status = rq_queue.status(job_id)

    assert status is not None and status.state is JobState.QUEUED and status.progress == 0.0
    assert Job.fetch(job_id, connection=connection).retries_left == REINDEX_RETRIES - 1
