"""Admin routes (bearer token): start a background re-index, follow its job."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool

from index.prototypes import PrototypeOptions
from models.datasets import FORMATS
from service.deps import AdminDep, JobQueueDep
from service.errors import InvalidQueryError, InvalidSourceError, JobNotFoundError
from service.jobs import JobStatus, ReindexRequest
from service.schemas import JobOut, ReindexAccepted, ReindexIn, error_responses

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])

ADMIN_ERRORS = error_responses(401, 403, 503)  # 503: the job queue (Redis) is unreachable


def _checked_request(body: ReindexIn) -> ReindexRequest:
    if body.format not in FORMATS:
        raise InvalidQueryError(
            f"unknown format {body.format!r}; known formats are {sorted(FORMATS)}"
        )
    source = Path(body.source)
    try:
        exists = source.exists()
    except (OSError, ValueError) as exc:  # a name over NAME_MAX, a NUL byte
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidSourceError(f"source is not a usable path: {reason}") from exc
    if not exists:
        raise InvalidSourceError(f"source {body.source!r} does not exist on the server")
    return ReindexRequest(source, body.format, body.factory, _prototype_options(body))


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
    )


@router.post(
    "/reindex",
    summary="Re-index a dataset in the background; returns the job to follow",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReindexAccepted,
    responses=ADMIN_ERRORS | error_responses(422),
)
async def reindex(
    body: ReindexIn, jobs: JobQueueDep, request: Request, response: Response
) -> ReindexAccepted:
    reindex_request = _checked_request(body)
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
