"""The RQ side of re-index jobs: the task a worker runs, and its encoder.

``reindex_job`` takes the request as its own JSON (see :mod:`service.reindex`) and
the enqueuing API's settings as JSON (secrets left out). So every worker builds
what the API asked for, with the API's model, into the index directory the API
serves from, whatever the worker's own environment says; a worker's own
settings only choose the encoder it preloads, which jobs with the same model,
device and cache directory reuse. Progress and the outcome go to ``job.meta``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rq import get_current_job
from rq.job import Job

from index.chunks import Chunk, remove_chunks
from index.manifest import Manifest
from models.encoders import Encoder
from models.registry import load_encoder
from service.events import REDIS_DOWN
from service.jobs import JobOutcome, short_error
from service.pending import remove_unused_uploads
from service.reindex import (
    REINDEX_BATCH_SIZE,
    ReindexRequest,
    merge_reindex,
    reindex,
    reindex_chunk,
)
from service.settings import Settings

logger = logging.getLogger(__name__)

META_SAVE_INTERVAL_S = 0.5  # progress writes to Redis at most this often


@functools.lru_cache(maxsize=2)
def _load_encoder_once(spec: str, device: str, cache_dir: Path | None) -> Encoder:
    return load_encoder(spec, device=device, cache_dir=cache_dir)


def encoder_for(settings: Settings) -> Encoder:
    """The encoder the settings name, loaded once per process (workers preload it)."""
    return _load_encoder_once(settings.model, settings.device, settings.cache_dir)


class JobMetaProgress:
    """Progress callback that writes the fraction done into ``job.meta``, throttled."""

    def __init__(self, job: Job, interval_s: float = META_SAVE_INTERVAL_S) -> None:
        self._job = job
        self._interval_s = interval_s
        self._last_save = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last_save < self._interval_s:
            return
        self._last_save = now
        self._job.meta["progress"] = done / total if total else 0.0
        try:
            self._job.save_meta()
        except REDIS_DOWN as exc:  # progress is advisory: the build goes on without Redis
            logger.warning("job %s: progress not saved, Redis unavailable: %s", self._job.id, exc)


@contextmanager
def _error_in_meta(job: Job) -> Iterator[None]:
    """An attempt's failure recorded in job.meta as one line for GET /admin/jobs (RQ
    keeps the full traceback), then raised on to RQ, which retries or fails the job."""
    try:
        yield
    except Exception as exc:
        job.meta["error"] = short_error(exc)
        job.save_meta()
        raise


def reindex_job(request_json: str, settings_json: str, batch_size: int = REINDEX_BATCH_SIZE) -> str:
    """RQ entry point: run one re-index attempt and record its outcome in job.meta."""
    settings = Settings.model_validate_json(settings_json)
    request = ReindexRequest.from_json(request_json)
    job = get_current_job()
    if job is None:  # called directly, outside a worker
        manifest = reindex(request, settings, encoder_for(settings), batch_size=batch_size)
        remove_unused_uploads(settings)
        return manifest.version
    # A retried attempt starts from scratch: forget the previous attempt's outcome.
    job.meta.update(progress=0.0, error=None, index_version=None, changes=None)
    job.save_meta()
    with _error_in_meta(job):
        encoder = encoder_for(settings)
        progress = JobMetaProgress(job)
        manifest = reindex(request, settings, encoder, progress, batch_size=batch_size)
    remove_unused_uploads(settings)
    return _record_outcome(job, manifest)


def _record_outcome(job: Job, manifest: Manifest) -> str:
    outcome = JobOutcome.of(manifest)
    job.meta.update(progress=1.0, index_version=outcome.index_version, changes=outcome.changes)
    job.save_meta()
    return outcome.index_version


def reindex_chunk_job(
    request_json: str,
    settings_json: str,
    build: str,
    chunk: list[int | None],
    batch_size: int = REINDEX_BATCH_SIZE,
) -> int:
    """RQ entry point: encode one chunk (``[index, start, stop]``) of a chunked re-index
    into its chunk folder; returns the records it held. Its progress goes to job.meta,
    where the merge job's status sums it (service.jobs)."""
    settings = Settings.model_validate_json(settings_json)
    request = ReindexRequest.from_json(request_json)
    index, start, stop = chunk
    part = Chunk(int(index or 0), int(start or 0), stop)
    job = get_current_job()
    if job is None:
        return reindex_chunk(request, settings, encoder_for(settings), build, part)
    job.meta.update(progress=0.0, error=None)
    job.save_meta()
    with _error_in_meta(job):
        encoder = encoder_for(settings)
        n_records = reindex_chunk(
            request, settings, encoder, build, part, JobMetaProgress(job), batch_size=batch_size
        )
    job.meta["progress"] = 1.0
    job.save_meta()
    return n_records


def merge_reindex_job(request_json: str, settings_json: str, build: str, n_chunks: int) -> str:
    """RQ entry point: the job that depends on every chunk job of a chunked re-index;
    assembles their chunks and publishes, with the outcome in job.meta as ``reindex_job``.
    The last attempt to fail removes the chunk folder (nothing would merge it later)."""
    settings = Settings.model_validate_json(settings_json)
    request = ReindexRequest.from_json(request_json)
    job = get_current_job()
    if job is None:
        manifest = merge_reindex(request, settings, encoder_for(settings), build, n_chunks)
        remove_unused_uploads(settings)
        return manifest.version
    # Its own "progress" is the merge's; GET /admin/jobs adds the chunks' (service.jobs).
    job.meta.update(progress=0.0, error=None, index_version=None, changes=None)
    job.save_meta()
    try:
        with _error_in_meta(job):
            encoder = encoder_for(settings)
            progress = JobMetaProgress(job)
            manifest = merge_reindex(request, settings, encoder, build, n_chunks, progress)
    except Exception:
        if not job.retries_left:
            remove_chunks(settings.index_dir, build)
        raise
    remove_unused_uploads(settings)
    return _record_outcome(job, manifest)
