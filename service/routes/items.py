"""GET /items/{id}: one catalog item of the live snapshot."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service.deps import SnapshotDep
from service.errors import ItemNotFoundError
from service.schemas import ItemOut, error_responses

router = APIRouter(prefix="/items", tags=["items"])


# ``:path`` because ids may contain slashes (food101: ``apple_pie/1005649``).
@router.get(
    "/{item_id:path}",
    summary="An item's label, metadata and vector kinds",
    response_model=ItemOut,
    responses=error_responses(404, 503),
)
async def get_item(item_id: str, snapshot: SnapshotDep) -> ItemOut:
    item = await run_in_threadpool(snapshot.get_item, item_id)
    if item is None:
        raise ItemNotFoundError(item_id)
    return ItemOut(id=item.id, label=item.label, metadata=item.metadata, kinds=list(item.kinds))
