"""Re-index and item-change jobs: the JobQueue seam and its two backends.

``create_job_queue`` picks Redis/RQ when ``MMSEARCH_REDIS_URL`` is set (jobs run in
separate ``mmsearch worker`` processes) and an in-process background thread
otherwise (the embedded default), which runs the reindexer it is given (the
API's: its loaded model, and the job succeeds once the API serves the result).
This module never imports the task that workers run: it enqueues it by name.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from typing import Protocol

import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Dependency, Job
from rq.job import JobStatus as RQStatus
from rq.registry import StartedJobRegistry
from rq.results import Result

from index.chunks import Chunk
from index.layout import new_version
from index.manifest import Manifest
from models.types import ProgressCallback
from service.events import REDIS_DOWN
from service.reindex import REINDEX_BATCH_SIZE, ReindexRequest, plan_request_chunks
from service.settings import Settings

logger = logging.getLogger(__name__)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: JobState
    progress: float  # 0..1
    index_version: str | None = None
    error: str | None = None
    # Items/vectors encoded and copied, items removed (index.reuse.ChangeCounts)
    changes: dict[str, int] | None = None


@dataclass(frozen=True)
class JobOutcome:
    """What a finished re-index made live, and what it encoded, copied and dropped."""

    index_version: str
    changes: dict[str, int] | None = None

    @classmethod
    def of(cls, manifest: Manifest) -> JobOutcome:
        return cls(manifest.version, dict(manifest.changes))


class JobQueueUnavailableError(RuntimeError):
    """The queue's backend (Redis) cannot be reached: jobs can be neither queued nor read."""


class JobQueue(Protocol):
    """Where the API hands re-index work; status is readable from any API process."""

    def enqueue_reindex(self, request: ReindexRequest) -> str: ...

    def enqueue_item_changes(self) -> str:
        """A job that applies every pending item change (service.apply_changes)."""
        ...

    def status(self, job_id: str) -> JobStatus | None: ...

    def problem(self) -> str | None:
        """Why jobs cannot be queued right now, or None when they can."""
        ...

    def close(self) -> None: ...


ERROR_MAX_CHARS = 300


def short_error(exc: BaseException) -> str:
    """One line for job status: the exception type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 1] + "…"


# Runs one request to the end and returns the version it made live, with its changes.
Reindexer = Callable[[ReindexRequest, ProgressCallback], JobOutcome]
# Applies every pending item change and returns the version that serves them.
ChangesApplier = Callable[[], JobOutcome]
Work = Callable[[ProgressCallback], JobOutcome]


FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED})


class JobCancelledError(Exception):
    """The queue was closed while the job waited or ran."""


class ThreadJobQueue:
    """Embedded backend: a background thread runs jobs one at a time, status in memory.

    One at a time because a build already keeps every core busy, and two builds
    racing to publish would make "which version is live" depend on timing.
    """

    MAX_KEPT_JOBS = 1000
    SHUTDOWN_MESSAGE = "cancelled: the service shut down"

    def __init__(self, reindex: Reindexer, apply_changes: ChangesApplier | None = None) -> None:
        self._reindex = reindex
        self._apply_changes = apply_changes
        self._lock = threading.Lock()
        self._statuses: dict[str, JobStatus] = {}
        self._pending: queue.Queue[tuple[str, Work] | None] = queue.Queue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._work, name="mmsearch-reindex", daemon=True)
        self._thread.start()

    def enqueue_reindex(self, request: ReindexRequest) -> str:
        return self._submit(partial(self._reindex, request))

    def enqueue_item_changes(self) -> str:
        if self._apply_changes is None:
            raise RuntimeError("this job queue was given no item change applier")
        apply_changes = self._apply_changes
        return self._submit(lambda _progress: apply_changes())

    def _submit(self, work: Work) -> str:
        if self._closing.is_set():
            raise RuntimeError("the job queue is closed")
        job_id = uuid.uuid4().hex
        self._record(JobStatus(job_id, JobState.QUEUED, 0.0))
        self._pending.put((job_id, work))
        return job_id

    def status(self, job_id: str) -> JobStatus | None:
        with self._lock:
            return self._statuses.get(job_id)

    def problem(self) -> str | None:
        return "the job queue is closed" if self._closing.is_set() else None

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; a running build stops at its next progress report."""
        self._closing.set()
        self._pending.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("re-index thread still running after %.0fs; abandoning it", timeout)

    def _work(self) -> None:
        while (item := self._pending.get()) is not None:
            job_id, work = item
            if self._closing.is_set():
                self._update(job_id, state=JobState.FAILED, error=self.SHUTDOWN_MESSAGE)
            else:
                self._run(job_id, work)

    def _run(self, job_id: str, work: Work) -> None:
        self._update(job_id, state=JobState.RUNNING)
        try:
            outcome = work(self._progress_reporter(job_id))
        except Exception as exc:
            # The job boundary: the API reports the one-line error, the log keeps
            # the traceback, and the thread lives on for the next job.
            logger.warning("re-index job %s failed", job_id, exc_info=True)
            self._update(job_id, state=JobState.FAILED, error=short_error(exc))
            return
        self._update(
            job_id,
            state=JobState.SUCCEEDED,
            progress=1.0,
            index_version=outcome.index_version,
            changes=outcome.changes,
        )

    def _progress_reporter(self, job_id: str) -> ProgressCallback:
        def report(done: int, total: int | None) -> None:
            if self._closing.is_set():
                raise JobCancelledError(self.SHUTDOWN_MESSAGE)
            self._update(job_id, progress=min(done / total, 1.0) if total else 0.0)

        return report

    def _record(self, status: JobStatus) -> None:
        with self._lock:
            self._statuses[status.job_id] = status
            finished = [s.job_id for s in self._statuses.values() if s.state in FINISHED_STATES]
            for old_id in finished[: max(0, len(self._statuses) - self.MAX_KEPT_JOBS)]:
                del self._statuses[old_id]

    def _update(self, job_id: str, **changes: object) -> None:
        with self._lock:
            self._statuses[job_id] = replace(self._statuses[job_id], **changes)  # type: ignore[arg-type]


REINDEX_RETRIES = 2  # extra attempts after a failure or a worker that died mid-job
ABANDONED_CHECK_INTERVAL_S = 2.0  # status reads run RQ's abandoned-job clean-up this often
JOB_KEEP_S = 7 * 24 * 3600  # how long finished jobs stay readable (RQ's default is 500 s)
REINDEX_TASK = "service.tasks.reindex_job"  # by name: the API need not import the worker
APPLY_CHANGES_TASK = "service.apply_changes.apply_changes_job"
CHUNK_TASK = "service.tasks.reindex_chunk_job"
MERGE_TASK = "service.tasks.merge_reindex_job"
# A chunked re-index's progress: the chunks' encoding (summed) up to this share, the
# merge (catalog, index, prototypes; one process) the rest.
ENCODE_SHARE = 0.9
REDIS_CONNECT_TIMEOUT_S = 2.0
REDIS_TIMEOUT_S = 10.0

RQ_STATES = {
    RQStatus.CREATED: JobState.QUEUED,
    RQStatus.QUEUED: JobState.QUEUED,
    RQStatus.DEFERRED: JobState.QUEUED,
    RQStatus.SCHEDULED: JobState.QUEUED,
    RQStatus.READY_TO_ENQUEUE: JobState.QUEUED,
    RQStatus.RATE_LIMITED: JobState.QUEUED,
    RQStatus.STARTED: JobState.RUNNING,
    RQStatus.FINISHED: JobState.SUCCEEDED,
    RQStatus.FAILED: JobState.FAILED,
    RQStatus.STOPPED: JobState.FAILED,
    RQStatus.CANCELED: JobState.FAILED,
}


class RQJobQueue:
    """Redis backend: jobs go on an RQ queue that ``mmsearch worker`` processes consume.

    Status lives in Redis (RQ's job hash and ``job.meta``), so any API process can
    read any job. Failed attempts and attempts whose worker died are retried
    ``REINDEX_RETRIES`` times. A dead worker's job is noticed once its heartbeat
    expires (service/worker.py) by RQ's own StartedJobRegistry clean-up, which
    live workers run and :meth:`status` runs too: so a job never shows
    ``running`` for more than a heartbeat TTL after its worker died, even with
    no worker left alive.

    A large re-index is several jobs: one per chunk and a merge that depends on
    them all (:meth:`_enqueue_chunked`, docs/chunked_reindex.md); its status is
    the merge job's, with the chunks' progress summed in.
    """

    def __init__(self, settings: Settings, *, batch_size: int = REINDEX_BATCH_SIZE) -> None:
        """``batch_size``: items encoded per step; smaller means finer progress."""
        if not settings.redis_url:
            raise ValueError("the RQ job queue needs MMSEARCH_REDIS_URL")
        self._settings = settings
        self._batch_size = batch_size
        # Timeouts: with Redis down, a request must fail in seconds, not hang.
        self._redis = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
        )
        self._queue = Queue(settings.queue_name, connection=self._redis)
        self._last_abandoned_check = -ABANDONED_CHECK_INTERVAL_S

    @contextmanager
    def _redis_needed(self) -> Iterator[None]:
        try:
            yield
        except REDIS_DOWN as exc:
            raise JobQueueUnavailableError(self._unreachable_message(exc)) from exc

    def _unreachable_message(self, exc: BaseException) -> str:
        kwargs = self._redis.connection_pool.connection_kwargs
        where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"  # never the password
        return (
            f"the job queue is unavailable: Redis at {where} is unreachable "
            f"({type(exc).__name__}); re-index jobs can be neither queued nor read until it is back"
        )

    def problem(self) -> str | None:
        try:
            self._redis.ping()
        except REDIS_DOWN as exc:
            return self._unreachable_message(exc)
        return None

    def enqueue_reindex(self, request: ReindexRequest) -> str:
        with self._redis_needed():
            return self._enqueue(request)

    def _enqueue(self, request: ReindexRequest) -> str:
        total, chunks = plan_request_chunks(request, self._settings, self._batch_size)
        if len(chunks) > 1:
            return self._enqueue_chunked(request, total, chunks)
        job = self._queue.enqueue(
            REINDEX_TASK,
            kwargs={**self._task_kwargs(request), "batch_size": self._batch_size},
            **self._job_options(f"reindex {request.source} ({request.format})"),
        )
        return str(job.id)

    def _task_kwargs(self, request: ReindexRequest) -> dict[str, object]:
        return {
            "request_json": request.to_json(),
            "settings_json": self._settings_json(),
        }

    def _job_options(self, description: str) -> dict[str, object]:
        return {
            "job_timeout": self._settings.job_timeout_s,
            "retry": Retry(max=REINDEX_RETRIES),
            "result_ttl": JOB_KEEP_S,
            "failure_ttl": JOB_KEEP_S,
            "meta": {"progress": 0.0},
            "description": description,
        }

    def _enqueue_chunked(self, request: ReindexRequest, total: int, chunks: list[Chunk]) -> str:
        """One job per chunk, any worker taking any of them, and a merge job that RQ
        enqueues once every chunk job has finished or failed for good (a failed chunk
        fails the merge with a clear message rather than leaving it deferred forever).
        The merge job's id is the re-index's: its status sums the chunks' progress."""
        build = new_version()
        what = f"reindex {request.source} ({request.format})"
        chunk_jobs = [
            self._queue.enqueue(
                CHUNK_TASK,
                kwargs={
                    **self._task_kwargs(request),
                    "build": build,
                    "chunk": [chunk.index, chunk.start, chunk.stop],
                    "batch_size": self._batch_size,
                },
                **self._job_options(f"{what} chunk {chunk.index + 1}/{len(chunks)}"),
            )
            for chunk in chunks
        ]
        options = self._job_options(f"{what} in {len(chunks)} chunks")
        options["meta"] = {
            "progress": 0.0,
            "chunk_jobs": [job.id for job in chunk_jobs],
            "chunk_records": [chunk.size(total) for chunk in chunks],
        }
        merge = self._queue.enqueue(
            MERGE_TASK,
            kwargs={**self._task_kwargs(request), "build": build, "n_chunks": len(chunks)},
            depends_on=Dependency(jobs=chunk_jobs, allow_failure=True),
            **options,
        )
        return str(merge.id)

    def enqueue_item_changes(self) -> str:
        with self._redis_needed():
            job = self._queue.enqueue(
                APPLY_CHANGES_TASK,
                kwargs={"settings_json": self._settings_json()},
                **self._job_options("apply pending item changes"),
            )
        return str(job.id)

    def _settings_json(self) -> str:
        return self._settings.model_dump_json(exclude={"admin_token"})

    def status(self, job_id: str) -> JobStatus | None:
        with self._redis_needed():
            return self._status(job_id)

    def _status(self, job_id: str) -> JobStatus | None:
        try:
            job = Job.fetch(job_id, connection=self._redis)
        except NoSuchJobError:
            return None
        if job.origin != self._queue.name:
            return None
        chunks = self._chunk_jobs(job)
        running = [j for j in (job, *chunks) if j.get_status(refresh=False) == RQStatus.STARTED]
        if running and self._abandoned_jobs_handled():
            for each in (job, *chunks):
                each.refresh()
        state = RQ_STATES.get(job.get_status(refresh=False), JobState.QUEUED)
        meta = job.meta
        progress = _progress(state, meta.get("progress"))
        if chunks:
            state, progress = _with_chunks(state, progress, chunks, meta.get("chunk_records"))
        return JobStatus(
            job_id=job_id,
            state=state,
            progress=progress,
            index_version=meta.get("index_version") or job.return_value(),
            error=_failure_message(job, chunks) if state is JobState.FAILED else None,
            changes=_changes(meta.get("changes")),
        )

    def _chunk_jobs(self, job: Job) -> list[Job]:
        """The chunk jobs of a chunked re-index's merge job (none for other jobs); a
        chunk job expired from Redis is left out."""
        ids = job.meta.get("chunk_jobs")
        if not isinstance(ids, list) or not ids:
            return []
        return [j for j in Job.fetch_many(ids, connection=self._redis) if j is not None]

    def _abandoned_jobs_handled(self) -> bool:
        """Run RQ's clean-up of jobs whose worker stopped heartbeating (at most once
        per ``ABANDONED_CHECK_INTERVAL_S``); True when it ran."""
        now = time.monotonic()
        if now - self._last_abandoned_check < ABANDONED_CHECK_INTERVAL_S:
            return False
        self._last_abandoned_check = now
        StartedJobRegistry(queue=self._queue).cleanup()
        return True

    def close(self) -> None:
        self._redis.close()


def _progress(state: JobState, saved: object) -> float:
    if state is JobState.SUCCEEDED:
        return 1.0
    if state is JobState.QUEUED:  # a retried job waits again: its last attempt's share is void
        return 0.0
    return float(saved) if isinstance(saved, int | float) else 0.0


def _with_chunks(
    merge_state: JobState, merge_progress: float, chunks: list[Job], weights: object
) -> tuple[JobState, float]:
    """A chunked re-index as one job: running once any chunk has started, and its
    progress the chunks' summed (weighted by their records), then the merge's."""
    states = [RQ_STATES.get(j.get_status(refresh=False), JobState.QUEUED) for j in chunks]
    done = [_progress(s, j.meta.get("progress")) for s, j in zip(states, chunks, strict=True)]
    sizes = weights if isinstance(weights, list) and len(weights) == len(chunks) else []
    total = sum(sizes)
    encoded = sum(d * w for d, w in zip(done, sizes, strict=True)) / total if total else 0.0
    if not total:  # sizes unknown (or all empty): each chunk counts the same
        encoded = sum(done) / len(done)
    if merge_state is JobState.SUCCEEDED:
        return merge_state, 1.0
    started = any(s is not JobState.QUEUED for s in states)
    state = JobState.RUNNING if merge_state is JobState.QUEUED and started else merge_state
    return state, ENCODE_SHARE * encoded + (1 - ENCODE_SHARE) * merge_progress


def _changes(saved: object) -> dict[str, int] | None:
    """The counts a worker saved in job.meta; None when absent or not counts."""
    if not isinstance(saved, dict):
        return None
    return {str(k): v for k, v in saved.items() if isinstance(v, int)}


def _failure_message(job: Job, chunks: list[Job]) -> str:
    """Why a job failed; for a chunked re-index, the first failed chunk's reason (the
    merge only knows that chunk is missing)."""
    for number, chunk in enumerate(chunks, start=1):
        if chunk.get_status(refresh=False) == RQStatus.FAILED:
            return f"chunk {number} of {len(chunks)} failed: {rq_failure_message(chunk)}"
    return rq_failure_message(job)


def rq_failure_message(job: Job) -> str:
    """The one-line reason a job failed, from the task's own record or RQ's."""
    if job.meta.get("error"):
        return str(job.meta["error"])
    result = job.latest_result()
    exc_string = (result.exc_string or "") if result and result.type == Result.Type.FAILED else ""
    if "AbandonedJobError" in exc_string:
        return "the worker running this job died and no retries were left (AbandonedJobError)"
    lines = [line for line in exc_string.strip().splitlines() if line.strip()]
    return lines[-1][:ERROR_MAX_CHARS] if lines else f"job ended as {job.get_status(refresh=False)}"


def create_job_queue(
    settings: Settings, in_process: Reindexer, in_process_changes: ChangesApplier | None = None
) -> JobQueue:
    """RQ when ``settings.redis_url`` is set, else a thread that runs ``in_process``
    (and ``in_process_changes`` for item changes)."""
    if settings.redis_url:
        return RQJobQueue(settings)
    return ThreadJobQueue(in_process, in_process_changes)
