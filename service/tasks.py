"""The re-index task, shared by the thread backend, the RQ worker and the CLI.

``create_job_queue`` hands it to the queue backend the settings pick;
``build_and_publish`` does the work; ``reindex_job`` is the RQ entry point. It
takes only plain serialisable arguments: the request fields and the enqueuing
API's settings as JSON (secrets left out). So every worker builds what the API
asked for, with the API's model, into the index directory the API serves from,
whatever the worker's own environment says; a worker's own settings only choose
the encoder it preloads, which jobs with the same model, device and cache
directory reuse. Progress and the outcome go to ``job.meta``.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import redis
from rq import get_current_job
from rq.job import Job

from index.build import build_snapshot
from index.manifest import Manifest
from index.prototypes import PrototypeOptions
from models.datasets import open_dataset
from models.encoders import Encoder
from models.registry import load_encoder
from models.types import ProgressCallback
from service.events import REDIS_DOWN, publish_snapshot_event
from service.jobs import (
    REINDEX_BATCH_SIZE,
    JobQueue,
    ReindexRequest,
    RQJobQueue,
    ThreadJobQueue,
    short_error,
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


def create_job_queue(settings: Settings) -> JobQueue:
    """RQ when ``settings.redis_url`` is set, else the in-process thread backend."""
    if settings.redis_url:
        return RQJobQueue(settings)
    return ThreadJobQueue(settings, run_reindex)


def run_reindex(
    request: ReindexRequest, settings: Settings, progress: ProgressCallback | None = None
) -> str:
    """Build and publish a snapshot of ``request.source``; returns its version."""
    return build_and_publish(request, settings, progress).version


def build_and_publish(
    request: ReindexRequest,
    settings: Settings,
    progress: ProgressCallback | None = None,
    *,
    batch_size: int = REINDEX_BATCH_SIZE,
) -> Manifest:
    """Build a snapshot of ``request.source``, make it live and announce it.

    The builder replaces CURRENT only once the snapshot is complete, so a failure
    or a killed process at any point leaves the live index as it was.
    """
    dataset = open_dataset(request.source, request.format)
    manifest = build_snapshot(
        dataset,
        encoder_for(settings),
        settings.index_dir,
        factory=request.factory,
        batch_size=batch_size,
        total=len(dataset),
        progress=progress,
        source=str(request.source),
        fmt=request.format,
        max_image_pixels=settings.max_image_pixels,
        prototypes=request.prototypes,
    )
    if settings.redis_url:
        announce_snapshot(settings.redis_url, manifest.version)
    return manifest


def announce_snapshot(redis_url: str, version: str) -> None:
    """Tell API processes about a new snapshot; they also poll CURRENT, so a
    Redis outage here only delays the swap and must not fail a finished build."""
    try:
        receivers = publish_snapshot_event(redis_url, version)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        logger.warning("snapshot %s published but the event was not sent: %s", version, exc)
        return
    logger.info("snapshot %s published; %d API process(es) notified", version, receivers)


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


def reindex_job(
    source: str,
    fmt: str,
    factory: str,
    settings_json: str,
    batch_size: int = REINDEX_BATCH_SIZE,
    prototypes_json: str | None = None,
) -> str:
    """RQ entry point: run one re-index attempt and record its outcome in job.meta."""
    settings = Settings.model_validate_json(settings_json)
    prototypes = PrototypeOptions.from_dict(json.loads(prototypes_json or "{}"))
    request = ReindexRequest(Path(source), fmt, factory, prototypes)
    job = get_current_job()
    if job is None:  # called directly, outside a worker
        return build_and_publish(request, settings, batch_size=batch_size).version
    # A retried attempt starts from scratch: forget the previous attempt's outcome.
    job.meta.update(progress=0.0, error=None, index_version=None)
    job.save_meta()
    try:
        progress = JobMetaProgress(job)
        version = build_and_publish(request, settings, progress, batch_size=batch_size).version
    except Exception as exc:
        # Recorded for GET /admin/jobs as one line; RQ keeps the full traceback.
        job.meta["error"] = short_error(exc)
        job.save_meta()
        raise
    job.meta.update(progress=1.0, index_version=version)
    job.save_meta()
    return version
