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
from pathlib import Path

from rq import get_current_job
from rq.job import Job

from models.encoders import Encoder
from models.registry import load_encoder
from service.events import REDIS_DOWN
from service.jobs import JobOutcome, short_error
from service.reindex import REINDEX_BATCH_SIZE, ReindexRequest, reindex
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


def reindex_job(request_json: str, settings_json: str, batch_size: int = REINDEX_BATCH_SIZE) -> str:
    """RQ entry point: run one re-index attempt and record its outcome in job.meta."""
    settings = Settings.model_validate_json(settings_json)
    request = ReindexRequest.from_json(request_json)
    job = get_current_job()
    if job is None:  # called directly, outside a worker
        return reindex(request, settings, encoder_for(settings), batch_size=batch_size).version
    # A retried attempt starts from scratch: forget the previous attempt's outcome.
    job.meta.update(progress=0.0, error=None, index_version=None, changes=None)
    job.save_meta()
    try:
        encoder = encoder_for(settings)
        progress = JobMetaProgress(job)
        manifest = reindex(request, settings, encoder, progress, batch_size=batch_size)
    except Exception as exc:
        # Recorded for GET /admin/jobs as one line; RQ keeps the full traceback.
        job.meta["error"] = short_error(exc)
        job.save_meta()
        raise
    outcome = JobOutcome.of(manifest)
    job.meta.update(progress=1.0, index_version=outcome.index_version, changes=outcome.changes)
    job.save_meta()
    return outcome.index_version
