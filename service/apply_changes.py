"""The "apply item changes" job: every pending change into one new snapshot.

A PUT / DELETE under /admin/items records its change (:mod:`service.pending`) and
enqueues this job; the first job to run takes *all* pending changes, so changes
that arrive while a snapshot is being built are coalesced into the next one, and
the jobs queued behind it find nothing left and finish at once. Applied changes
are removed from the store only after the snapshot holding them is published:
a job killed in between leaves them pending, and the retried job (RQ requeues an
abandoned job, see :mod:`service.worker`) or any later one applies them.

``apply_changes_job`` is the RQ entry point, enqueued by name by the API
(:data:`service.jobs.APPLY_CHANGES_TASK`); the in-process mode runs
:func:`apply_pending` in the API's job thread.
"""

from __future__ import annotations

import logging

import redis
from rq import get_current_job

from index.autotune import TuningPolicy
from index.changes import ApplyOptions, apply_changes, changes_lock
from index.layout import read_current
from models.encoders import Encoder
from service import tasks
from service.jobs import JobOutcome, short_error
from service.pending import PendingChanges, RedisPendingChanges, remove_unused_uploads
from service.reindex import REINDEX_BATCH_SIZE, announce_snapshot
from service.settings import Settings

logger = logging.getLogger(__name__)


def apply_options(settings: Settings) -> ApplyOptions:
    return ApplyOptions(
        batch_size=REINDEX_BATCH_SIZE,
        max_image_pixels=settings.max_image_pixels,
        tuning=TuningPolicy(settings.flat_max_vectors, settings.target_recall),
        backend=settings.vector_backend(),
        keep_older=settings.keep_snapshots,
    )


def apply_pending(settings: Settings, encoder: Encoder, store: PendingChanges) -> JobOutcome:
    """Apply every pending change as one snapshot, then forget them; when none are
    pending (an earlier job took them), the live version."""
    with changes_lock(settings.index_dir):
        entries = store.pending()
        if not entries:
            return JobOutcome(read_current(settings.index_dir) or "")
        changes = [entry.change for entry in entries]
        manifest = apply_changes(settings.index_dir, encoder, changes, apply_options(settings))
        store.remove([entry.seq for entry in entries])
        remove_unused_uploads(settings, store)  # the prune may have left some unused
    if settings.redis_url:
        announce_snapshot(settings.redis_url, manifest.version)
    return JobOutcome.of(manifest)


def apply_changes_job(settings_json: str) -> str:
    """RQ entry point: apply the pending changes and record the outcome in job.meta."""
    settings = Settings.model_validate_json(settings_json)
    if not settings.redis_url:
        raise ValueError("apply_changes_job needs the API's Redis URL in its settings")
    connection = redis.Redis.from_url(settings.redis_url)
    store = RedisPendingChanges(connection, settings.queue_name)
    job = get_current_job()
    try:
        outcome = apply_pending(settings, tasks.encoder_for(settings), store)
    except Exception as exc:
        if job is not None:  # one line for GET /admin/jobs; RQ keeps the traceback
            job.meta["error"] = short_error(exc)
            job.save_meta()
        raise
    finally:
        connection.close()
    if job is not None:
        job.meta.update(progress=1.0, index_version=outcome.index_version, changes=outcome.changes)
        job.save_meta()
    return outcome.index_version
