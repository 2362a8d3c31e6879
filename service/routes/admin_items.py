"""Item-level changes (bearer token): PUT / DELETE one item, or a batch of them.

Each change is recorded before the 202 and applied by a job on the job queue, which
folds every pending change into one new snapshot (:mod:`service.apply_changes`);
the reply names that job (GET /admin/jobs/{id}: its ``index_version`` is the first
snapshot holding the change).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from starlette.concurrency import run_in_threadpool

from index.changes import ItemChange
from index.snapshot import Snapshot
from service.deps import (
    AdminDep,
    JobQueueDep,
    PendingChangesDep,
    SettingsDep,
    StateDep,
    no_snapshot_message,
)
from service.errors import ItemNotFoundError, NoLiveIndexError
from service.item_changes import (
    delete_change,
    submit,
    unknown_items,
    upsert_change,
    upsert_changes,
)
from service.item_schemas import ItemBatchIn, ItemChangesAccepted, ItemIn
from service.jobs import JobQueue
from service.pending import PendingChanges
from service.schemas import MAX_NAME_CHARS, error_responses
from service.state import AppState

router = APIRouter(prefix="/admin/items", tags=["admin"], dependencies=[AdminDep])

ERRORS = error_responses(401, 403, 409, 413, 422, 503)
ItemIdPath = Annotated[str, Path(min_length=1, max_length=MAX_NAME_CHARS)]


def _live(state: AppState) -> Snapshot:
    """The snapshot changes apply to; 409 when there is none yet."""
    snapshot = state.current_snapshot()
    if snapshot is None:
        raise NoLiveIndexError(f"item changes need a live index: {no_snapshot_message(state)}")
    return snapshot


async def _accepted(
    changes: list[ItemChange],
    pending: PendingChanges,
    jobs: JobQueue,
    request: Request,
    response: Response,
) -> ItemChangesAccepted:
    job_id = await run_in_threadpool(submit, pending, jobs, changes)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job_id))
    deletes = sum(change.record is None for change in changes)
    return ItemChangesAccepted(job_id=job_id, upserts=len(changes) - deletes, deletes=deletes)


@router.post(
    "/batch",
    summary="Upsert and delete many items; one job applies them together",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ItemChangesAccepted,
    responses=ERRORS | error_responses(404),
)
async def change_items(
    body: ItemBatchIn,
    state: StateDep,
    settings: SettingsDep,
    pending: PendingChangesDep,
    jobs: JobQueueDep,
    request: Request,
    response: Response,
) -> ItemChangesAccepted:
    snapshot = _live(state)
    unknown = await run_in_threadpool(unknown_items, snapshot, pending, body.deletes)
    if unknown:
        raise ItemNotFoundError(unknown[0])
    upserts = await run_in_threadpool(upsert_changes, body.upserts, settings)
    deletes = [delete_change(item_id) for item_id in body.deletes]
    return await _accepted(upserts + deletes, pending, jobs, request, response)


# ``:path`` because ids may contain slashes (food101: ``apple_pie/1005649``).
@router.put(
    "/{item_id:path}",
    summary="Create or replace one item (inputs and metadata); applied by a job",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ItemChangesAccepted,
    responses=ERRORS,
)
async def put_item(
    item_id: ItemIdPath,
    body: ItemIn,
    state: StateDep,
    settings: SettingsDep,
    pending: PendingChangesDep,
    jobs: JobQueueDep,
    request: Request,
    response: Response,
) -> ItemChangesAccepted:
    _live(state)
    change = await run_in_threadpool(upsert_change, item_id, body, settings)
    return await _accepted([change], pending, jobs, request, response)


@router.delete(
    "/{item_id:path}",
    summary="Delete one item; applied by a job",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ItemChangesAccepted,
    responses=ERRORS | error_responses(404),
)
async def delete_item(
    item_id: ItemIdPath,
    state: StateDep,
    pending: PendingChangesDep,
    jobs: JobQueueDep,
    request: Request,
    response: Response,
) -> ItemChangesAccepted:
    snapshot = _live(state)
    if await run_in_threadpool(unknown_items, snapshot, pending, [item_id]):
        raise ItemNotFoundError(item_id)
    return await _accepted([delete_change(item_id)], pending, jobs, request, response)
