"""A re-index split into chunk jobs on RQ (issue #14, item 3): every worker encodes
chunks, a merge job that depends on all of them publishes, a killed worker's chunk
is retried, and the parent's progress sums the chunks'.

The tiny encoder stands in for the model: in-process burst workers here, real
``mmsearch worker`` processes (tests.service.tiny_worker) for the pool and the kill.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue, Worker
from rq.job import Job
from rq.job import JobStatus as RQStatus

from index.layout import read_current
from index.snapshot import CATALOG_FILE, VECTORS_FILE
from models.datasets import open_dataset
from service.app import create_app
from service.jobs import ENCODE_SHARE, REINDEX_RETRIES, JobState, JobStatus, RQJobQueue
from service.reindex import REINDEX_BATCH_SIZE, ReindexRequest, reindex
from service.settings import Settings
from service.worker import run_worker
from tests.conftest import write_kfood_sample
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import ADMIN_TOKEN, make_settings, rq_settings_of_own_queue
from tests.service.jobs_support import (
    FINISHED,
    kill_process,
    log_tail,
    service_env,
    start_process,
    stop_process,
    wait_for_status,
    wait_until_finished,
)
from tests.service.tiny_worker import DELAY_ENV

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BATCH = 2
N_RECORDS = 12
CHUNKS = 3  # of 4 records (two batches) each
WORKER_START_S = 90  # imports on a busy 2-core machine


@pytest.fixture()
def settings(clean_redis: str, tmp_path: Path) -> Settings:
    return rq_settings_of_own_queue(tmp_path / "index", clean_redis)


@pytest.fixture()
def queue(settings: Settings) -> Iterator[RQJobQueue]:
    jobs = RQJobQueue(settings, batch_size=BATCH)
    yield jobs
    jobs.close()


@pytest.fixture()
def source(shared_data: Path, tmp_path: Path) -> Path:
    return write_kfood_sample(shared_data / "kfood", tmp_path / "kfood", N_RECORDS)


def single_build(source: Path, tmp_path: Path, batch_size: int = BATCH) -> Path:
    """The same source built by one process, as reference: its snapshot folder."""
    settings = make_settings(tmp_path / "single")
    encoder = TinyEncoder(dim=32, seed=0)  # the tiny workers' model
    request = ReindexRequest(source, "kfood")
    version = reindex(request, settings, encoder, batch_size=batch_size).version
    return settings.index_dir / version


def assert_complete_and_as_single(settings: Settings, source: Path, reference: Path) -> None:
    """Every record of the source once in the live catalog, vectors as the single build's."""
    live = settings.index_dir / str(read_current(settings.index_dir))
    db = sqlite3.connect(live / CATALOG_FILE)
    try:
        ids = [item_id for (item_id,) in db.execute("SELECT id FROM items ORDER BY rowid")]
        rows = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT item_id || kind) FROM vectors"
        ).fetchone()
    finally:
        db.close()
    expected = [record.id for record in open_dataset(source, "kfood")]
    assert ids == expected  # each once, in source order
    assert rows[0] == rows[1]  # no (item, kind) row twice
    assert np.array_equal(np.load(live / VECTORS_FILE), np.load(reference / VECTORS_FILE))


def chunk_jobs(settings: Settings, parent_id: str) -> list[Job]:
    connection = redis.Redis.from_url(settings.redis_url or "")
    parent = Job.fetch(parent_id, connection=connection)
    return [Job.fetch(i, connection=connection) for i in parent.meta["chunk_jobs"]]


# --------------------------------------------------------------------------- in-process


def test_the_api_splits_a_large_reindex_into_chunk_jobs_and_a_merge_that_publishes(
    settings: Settings, shared_data: Path, tiny_job_encoder: TinyEncoder, tmp_path: Path
) -> None:
    # The API's queue encodes REINDEX_BATCH_SIZE (32) records a batch, and chunks are whole
    # batches: 70 records in chunks of 32 make three chunks.
    source = write_kfood_sample(shared_data / "kfood", tmp_path / "kfood70", 70)
    with TestClient(create_app(settings, encoder=tiny_job_encoder)) as client:
        body = {"source": str(source), "format": "kfood", "chunk_size": REINDEX_BATCH_SIZE}
        accepted = client.post("/admin/reindex", json=body, headers=AUTH)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        chunks = chunk_jobs(settings, job_id)
        assert len(chunks) == 3
        queued = client.get(f"/admin/jobs/{job_id}", headers=AUTH).json()
        assert (queued["state"], queued["progress"]) == ("queued", 0.0)

        assert run_worker(settings, burst=True)
        done = client.get(f"/admin/jobs/{job_id}", headers=AUTH).json()

    assert done["state"] == "succeeded", done
    assert done["progress"] == 1.0 and done["index_version"] == read_current(settings.index_dir)
    assert done["changes"]["items_embedded"] == 70
    assert all(job.get_status() == RQStatus.FINISHED for job in chunks)
    reference = single_build(source, tmp_path, REINDEX_BATCH_SIZE)
    assert_complete_and_as_single(settings, source, reference)
    assert list(settings.index_dir.glob(".chunks-*")) == []


def test_small_catalogs_stay_one_job_unless_chunks_are_asked_for(
    settings: Settings, queue: RQJobQueue, source: Path
) -> None:
    single = queue.enqueue_reindex(ReindexRequest(source, "kfood"))
    asked = queue.enqueue_reindex(ReindexRequest(source, "kfood", chunks=CHUNKS))
    connection = redis.Redis.from_url(settings.redis_url or "")

    assert "chunk_jobs" not in Job.fetch(single, connection=connection).meta
    assert len(chunk_jobs(settings, asked)) == CHUNKS


def test_a_chunk_failing_for_good_fails_the_reindex_with_a_clear_error(
    settings: Settings, queue: RQJobQueue, source: Path, tiny_job_encoder: TinyEncoder
) -> None:
    lines = (source / "recipes.jsonl").read_text(encoding="utf-8").splitlines()
    lines[-1] = lines[0]  # the last chunk meets a repeated id; the first two never read it
    (source / "recipes.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    job_id = queue.enqueue_reindex(ReindexRequest(source, "kfood", chunks=CHUNKS))

    run_worker(settings, burst=True)
    status = queue.status(job_id)

    assert status is not None and status.state is JobState.FAILED, status
    assert status.error is not None and status.error.startswith("chunk 3 of 3 failed: ")
    assert "or repeated" in status.error  # the chunk's own reason, not only the merge's
    merge_error = Job.fetch(job_id, connection=redis.Redis.from_url(settings.redis_url or ""))
    assert "chunk(s) [2] of 3 were never written" in merge_error.meta["error"]
    assert read_current(settings.index_dir) is None
    assert list(settings.index_dir.glob(".chunks-*")) == []  # the last merge attempt cleared it


@pytest.mark.parametrize(
    "extra", [{"chunks": 0}, {"chunks": 100_000}, {"chunk_size": 0}, {"chunks": 2, "chunk_size": 4}]
)
def test_bad_chunking_options_are_422(
    tiny_client: TestClient, source: Path, extra: dict[str, int]
) -> None:
    body = {"source": str(source), "format": "kfood", **extra}
    response = tiny_client.post("/admin/reindex", json=body, headers=AUTH)
    assert response.status_code == 422, response.text


# --------------------------------------------------------------------------- real workers


def tiny_worker_args(settings: Settings, delay_s: float) -> tuple[list[str], dict[str, str]]:
    env = {**service_env(settings), DELAY_ENV: str(delay_s)}
    return [sys.executable, "-m", "tests.service.tiny_worker"], env


def wait_for_workers(settings: Settings, n: int) -> None:
    connection = redis.Redis.from_url(settings.redis_url or "")
    rq_queue = Queue(settings.queue_name, connection=connection)
    deadline = time.monotonic() + WORKER_START_S
    while len(Worker.all(queue=rq_queue)) < n:
        assert time.monotonic() < deadline, f"{n} workers did not start"
        time.sleep(0.2)


def follow(queue: RQJobQueue, job_id: str, timeout_s: float) -> list[JobStatus]:
    """Every status read until the job finishes, 20 a second."""
    seen: list[JobStatus] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = queue.status(job_id)
        assert status is not None
        seen.append(status)
        if status.state in FINISHED:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s:.0f}s; last {seen[-1:]}")


def test_two_workers_share_the_chunks_and_progress_sums_them(
    settings: Settings, queue: RQJobQueue, source: Path, tmp_path: Path
) -> None:
    args, env = tiny_worker_args(settings, delay_s=0.3)
    logs = [tmp_path / f"worker-{i}.log" for i in (1, 2)]
    workers = [start_process(args, env, log) for log in logs]
    try:
        wait_for_workers(settings, 2)
        job_id = queue.enqueue_reindex(ReindexRequest(source, "kfood", chunks=CHUNKS))
        statuses = follow(queue, job_id, timeout_s=120)
    finally:
        for worker in workers:
            stop_process(worker)
    final = statuses[-1]
    assert final.state is JobState.SUCCEEDED, f"{final}\n{''.join(map(log_tail, logs))}"

    assert_complete_and_as_single(settings, source, single_build(source, tmp_path))
    ran_on = {job.worker_name for job in chunk_jobs(settings, job_id)}
    assert len(ran_on) == 2, ran_on  # both workers encoded chunks
    progress = [status.progress for status in statuses]
    assert progress == sorted(progress) and progress[-1] == 1.0
    # Steps finer than whole chunks: a chunk half done counts half (the third chunk runs
    # alone, so its halfway mark cannot coincide with two other halves).
    per_chunk = ENCODE_SHARE / CHUNKS
    partial = sorted({round(p, 3) for p in progress if 0 < p < ENCODE_SHARE})
    assert any(abs(p / per_chunk - round(p / per_chunk)) > 0.1 for p in partial), partial
    assert any(s.state is JobState.RUNNING for s in statuses)


def test_a_worker_killed_mid_chunk_has_that_chunk_retried_and_nothing_is_lost(
    settings: Settings, queue: RQJobQueue, source: Path, tmp_path: Path
) -> None:
    args, env = tiny_worker_args(settings, delay_s=1.0)  # a chunk lasts about 6 s
    first_log = tmp_path / "worker-1.log"
    first = start_process(args, env, first_log)
    try:
        wait_for_workers(settings, 1)
        job_id = queue.enqueue_reindex(ReindexRequest(source, "kfood", chunks=CHUNKS))
        wait_for_status(queue, job_id, lambda s: s.progress > 0, timeout_s=WORKER_START_S)
        started = [j for j in chunk_jobs(settings, job_id) if j.get_status() == RQStatus.STARTED]
        assert len(started) == 1, log_tail(first_log)
        kill_process(first)
    finally:
        stop_process(first)

    args, env = tiny_worker_args(settings, delay_s=0.0)
    logs = [tmp_path / f"worker-{i}.log" for i in (2, 3)]
    workers = [start_process(args, env, log) for log in logs]
    try:
        status = wait_until_finished(queue, job_id, timeout_s=WORKER_START_S + 90)
    finally:
        for worker in workers:
            stop_process(worker)

    assert status.state is JobState.SUCCEEDED, f"{status}\n{''.join(map(log_tail, logs))}"
    assert_complete_and_as_single(settings, source, single_build(source, tmp_path))
    killed = Job.fetch(started[0].id, connection=redis.Redis.from_url(settings.redis_url or ""))
    assert killed.get_status() == RQStatus.FINISHED
    assert killed.retries_left == REINDEX_RETRIES - 1  # exactly one attempt was abandoned
