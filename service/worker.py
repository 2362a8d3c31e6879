"""``mmsearch worker``: an RQ worker for re-index jobs.

Why a ``SimpleWorker`` (job runs in the worker process) and not RQ's default
forking ``Worker``: the encoder is loaded once when the worker starts and every job
reuses it. A forked child could not use a CUDA context created by its parent, and
torch's OpenMP thread pool is not fork-safe either.

What SimpleWorker lacks is a heartbeat while a job runs, so RQ would have to
assume a job may run for its whole timeout (hours) before calling it abandoned.
``ReindexWorker`` adds a heartbeat thread and a short heartbeat TTL instead: when a
worker dies mid-job (SIGKILL, OOM, lost machine), its entry in RQ's
StartedJobRegistry expires within ``HEARTBEAT_TTL_S`` and the next registry
maintenance of any live worker (on start, then every ``MAINTENANCE_INTERVAL_S``)
requeues the job while it has retries left, else marks it failed with
``AbandonedJobError``; API processes run the same clean-up when they read a
running job's status, so this happens even when no worker is left. The dead
attempt never touched the live index: the builder replaces CURRENT only after a
complete snapshot is on disk, and its staging directory, no longer locked, is
removed when a worker starts or the next build begins.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.worker import WorkerStatus

from index.layout import clean_stale_staging
from service.events import REDIS_DOWN
from service.settings import Settings
from service.tasks import encoder_for

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 5
HEARTBEAT_TTL_S = 15  # a job is abandoned this long after its worker's last heartbeat
# An idle worker wakes from its blocking dequeue every WORKER_TTL_S - 15 s (RQ's rule)
# and then runs registry maintenance if MAINTENANCE_INTERVAL_S have passed.
WORKER_TTL_S = 30
MAINTENANCE_INTERVAL_S = 15
FIRST_BACKOFF_S = 1.0  # waiting for Redis after an outage ended RQ's loop
MAX_BACKOFF_S = 30.0


class ReindexWorker(SimpleWorker):
    """A SimpleWorker that heartbeats while its job runs; see the module docstring."""

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return HEARTBEAT_TTL_S

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        with self._heartbeats_while_running(job, execution):
            self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)

    @contextmanager
    def _heartbeats_while_running(self, job: Job, execution: Execution) -> Iterator[None]:
        done = threading.Event()

        def beat() -> None:
            while not done.wait(HEARTBEAT_INTERVAL_S):
                try:
                    self.maintain_heartbeats(job, execution)
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                    # A missed beat only risks a needless retry; keep beating.
                    logger.warning("heartbeat for job %s failed: %s", job.id, exc)

        thread = threading.Thread(target=beat, name=f"rq-heartbeat-{job.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def run_worker(settings: Settings, *, burst: bool = False) -> bool:
    """Consume ``settings.queue_name`` until stopped (or until empty with ``burst``).

    Survives Redis outages: RQ's loop ends on a lost connection (mid-job, or its
    timeout), so a fresh worker starts once Redis answers again, with back-off; the
    encoder stays loaded. Returns whether any job was processed.
    """
    if not settings.redis_url:
        raise ValueError("mmsearch worker needs a Redis URL (set MMSEARCH_REDIS_URL)")
    connection = redis.Redis.from_url(settings.redis_url)
    connection.ping()  # fail fast with a clear error before loading the model
    clean_stale_staging(settings.index_dir)  # what a build killed with the last worker left
    encoder = encoder_for(settings)
    logger.info("encoder %s ready on %s", encoder.fingerprint, encoder.device)
    processed = False
    while True:
        worker = _new_worker(settings, connection)
        try:
            processed |= worker.work(burst=burst, logging_level=settings.log_level.upper())
        except REDIS_DOWN as exc:  # RQ's teardown reports the worker's death to Redis
            logger.warning("worker %s ended with Redis unavailable: %s", worker.name, exc)
        except StopRequested:
            return processed
        if worker._stop_requested:  # SIGTERM / SIGINT: RQ records it here
            return processed
        if burst and _redis_up(connection):
            return processed
        if not _wait_for_redis(connection, worker):
            return processed
        logger.info("Redis is reachable again; restarting the worker")


def _new_worker(settings: Settings, connection: redis.Redis) -> ReindexWorker:
    return ReindexWorker(
        [Queue(settings.queue_name, connection=connection)],
        connection=connection,
        worker_ttl=WORKER_TTL_S,
        job_monitoring_interval=HEARTBEAT_INTERVAL_S,
        maintenance_interval=MAINTENANCE_INTERVAL_S,
    )


def _redis_up(connection: redis.Redis) -> bool:
    try:
        connection.ping()
    except REDIS_DOWN:
        return False
    return True


def _wait_for_redis(connection: redis.Redis, worker: ReindexWorker) -> bool:
    """Ping with exponential back-off until Redis answers (True) or a stop is asked (False).

    Waits at least once, so a worker that keeps failing for another reason restarts
    once a second, not in a tight loop."""
    backoff = FIRST_BACKOFF_S
    while True:
        try:
            time.sleep(backoff)
        except StopRequested:  # RQ's signal handler, still installed
            return False
        if worker._stop_requested:
            return False
        if _redis_up(connection):
            return True
        logger.warning("Redis unavailable; the worker retries in %.0f s", backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_S)
