"""GET /images/{id}: the photo an item was indexed with.

Only files the snapshot's catalog names are ever read: the path comes from the
catalog, the request only picks an item id, so no id (``../``, absolute paths,
encoded dots) can reach another file. Responses never name server paths.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import stat
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from index.snapshot import Snapshot
from service.deps import SnapshotDep
from service.errors import ImageNotFoundError, ItemNotFoundError
from service.schemas import error_responses

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/images", tags=["items"])

# A re-index may point an id at another photo: browsers re-check after a while.
CACHE_CONTROL = "public, max-age=600"


def _indexed_photo(snapshot: Snapshot, item_id: str) -> tuple[Path, os.stat_result]:
    """The item's photo file and its stat; domain errors when there is none to serve."""
    path = snapshot.image_path(item_id)
    if path is None:
        if snapshot.get_item(item_id) is None:
            raise ItemNotFoundError(item_id)
        raise ImageNotFoundError(f"item {item_id!r} has no image")
    try:
        found = path.stat()
    except OSError as exc:
        logger.warning("image of item %r unavailable: %s", item_id, exc)
        raise ImageNotFoundError(f"the image of item {item_id!r} is no longer available") from exc
    if not stat.S_ISREG(found.st_mode):
        logger.warning("image of item %r is not a regular file: %s", item_id, path)
        raise ImageNotFoundError(f"the image of item {item_id!r} is no longer available")
    return path, found


# ``:path`` because ids may contain slashes (food101: ``apple_pie/1005649``).
@router.get(
    "/{item_id:path}",
    summary="The photo an item was indexed with",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}}, **error_responses(404, 503)},
)
async def get_image(item_id: str, snapshot: SnapshotDep) -> FileResponse:
    path, found = await run_in_threadpool(_indexed_photo, snapshot, item_id)
    media_type, _ = mimetypes.guess_type(path.name)
    return FileResponse(
        path,
        stat_result=found,
        media_type=media_type or "application/octet-stream",
        headers={"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"},
    )
