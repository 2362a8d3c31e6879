"""A worker SIGKILLed mid-build: the live index is untouched and the job is retried.

RQ notices a dead worker's job when the job's StartedJobRegistry entry expires (its
heartbeat TTL, see service/worker.py) and a live worker runs registry maintenance;
the job then goes back on the queue because it has retries left.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from rq.job import Job

from index.layout import read_current
from index.snapshot import load_current
from models.encoders import Encoder
from service.jobs import REINDEX_RETRIES, JobState, RQJobQueue
from service.reindex import ReindexRequest, reindex
from tests.conftest import write_kfood_sample
from tests.service.helpers import rq_settings_of_own_queue
from tests.service.jobs_support import (
    kill_process,
    log_tail,
    mmsearch_command,
    running,
    service_env,
    wait_for_status,
    wait_until_finished,
    worker_log_on_failure,
)

# Small batches: the first progress report comes long before the build ends.
SLOW_SAMPLE_SIZE = 24
SLOW_BATCH_SIZE = 4
START_TIMEOUT_S = 240  # worker start (model load) and a first batch on a busy CPU
RECOVERY_TIMEOUT_S = 420  # heartbeat expiry + maintenance + a full rebuild


@pytest.mark.slow
def test_killed_worker_leaves_live_index_and_job_is_retried(
    clean_redis: str,
    kfood_sample: Path,
    shared_data: Path,
    encoder: Encoder,
    tmp_path: Path,
) -> None:
    settings = rq_settings_of_own_queue(tmp_path / "index", clean_redis)
    live = reindex(ReindexRequest(kfood_sample, "kfood"), settings, encoder).version
    big_sample = write_kfood_sample(shared_data / "kfood", tmp_path / "big", SLOW_SAMPLE_SIZE)
    queue = RQJobQueue(settings, batch_size=SLOW_BATCH_SIZE)
    job_id = queue.enqueue_reindex(ReindexRequest(source=big_sample, format="kfood"))
    env = service_env(settings)

    first_log = tmp_path / "worker-1.log"
    with running([*mmsearch_command(), "worker"], env, first_log) as first_worker:
        with worker_log_on_failure(first_log):
            wait_for_status(
                queue, job_id, lambda s: s.progress > 0, timeout_s=START_TIMEOUT_S, what="progress"
            )
        kill_process(first_worker)

    # The dead attempt changed nothing that is served.
    assert read_current(settings.index_dir) == live
    snapshot = load_current(settings.index_dir, encoder.fingerprint)
    try:
        query = encoder.encode_texts(["비빔밥"])[0]
        assert snapshot.version == live and len(snapshot.search(query, 3)) == 3
    finally:
        snapshot.close()
    killed = queue.status(job_id)
    assert killed is not None and killed.state is JobState.RUNNING  # RQ can't know yet

    second_log = tmp_path / "worker-2.log"
    with (
        running([*mmsearch_command(), "worker"], env, second_log),
        worker_log_on_failure(second_log),
    ):
        status = wait_until_finished(queue, job_id, timeout_s=RECOVERY_TIMEOUT_S)

    assert status.state is JobState.SUCCEEDED, f"{status}\n{log_tail(second_log)}"
    assert status.index_version == read_current(settings.index_dir) != live
    job = Job.fetch(job_id, connection=redis.Redis.from_url(clean_redis))
    assert job.retries_left == REINDEX_RETRIES - 1  # exactly one attempt was abandoned
    queue.close()
