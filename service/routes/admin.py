"""Admin routes (bearer token): start a background re-index, follow its job."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool

from index.prototypes import PrototypeOptions
from service.deps import AdminDep, JobQueueDep, StateDep
from service.errors import JobNotFoundError
from service.jobs import JobStatus
from service.reindex import ReindexRequest, check_request
from service.schemas import (
    JobOut,
    ReindexAccepted,
    ReindexChangesOut,
    ReindexIn,
    error_responses,
)

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])

ADMIN_ERRORS = error_responses(401, 403, 503)  # 503: the job queue (Redis) is unreachable


def _reindex_request(body: ReindexIn) -> ReindexRequest:
    return ReindexRequest(
        Path(body.source),
        body.format,
        body.factory,
        _prototype_options(body),
        force=body.force,
        chunks=body.chunks,
        chunk_size=body.chunk_size,
    )


def _prototype_options(body: ReindexIn) -> PrototypeOptions:
    """PrototypeOptionsError (422) for a malformed class field or zero-shot class name."""
    extra = body.zero_shot_classes or {}
    return PrototypeOptions(
        class_field=body.class_field,
        shots=body.shots,
        seed=body.seed,
        text_weight=body.text_weight,
        zero_shot_classes=dict.fromkeys(extra) if isinstance(extra, list) else dict(extra),
    )


def _job_out(job: JobStatus) -> JobOut:
    return JobOut(
        job_id=job.job_id,
        state=job.state.value,
        progress=min(max(job.progress, 0.0), 1.0),
        index_version=job.index_version,
        error=job.error,
        changes=ReindexChangesOut(**job.changes) if job.changes else None,
    )


@router.post(
    "/reindex",
    summary="Re-index a dataset in the background; returns the job to follow",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReindexAccepted,
    responses=ADMIN_ERRORS | error_responses(422),
)
async def reindex(
    body: ReindexIn, jobs: JobQueueDep, state: StateDep, request: Request, response: Response
) -> ReindexAccepted:
    reindex_request = _reindex_request(body)
    # The factory is checked against the model's dimension once the model is loaded
    # here; otherwise by the process that builds, with the same message.
    dim = state.encoder.dim if state.encoder is not None else None
    settings = state.settings
    await run_in_threadpool(  # stats the source
        check_request, reindex_request, dim, settings.data_roots, settings.index_backend
    )
    job_id = await run_in_threadpool(jobs.enqueue_reindex, reindex_request)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job_id))
    return ReindexAccepted(job_id=job_id)


@router.get(
    "/jobs/{job_id}",
    summary="State, progress, resulting index version or error of a re-index job",
    response_model=JobOut,
    responses=ADMIN_ERRORS | error_responses(404),
)
async def get_job(job_id: str, jobs: JobQueueDep) -> JobOut:
    job = await run_in_threadpool(jobs.status, job_id)
    if job is None:
        raise JobNotFoundError(job_id)
    return _job_out(job)
