"""POST /tag: an image's nearest classes (prototypes) and ranked free-form tags.

One path, two bodies, told apart by Content-Type: ``multipart/form-data`` (field
``file``, plus ``k`` and repeated ``tags`` fields) and ``application/json``
(:class:`~service.schemas.TagRequest`, the image as base64 or a data URI). Both
are documented in the OpenAPI schema by hand, as FastAPI cannot declare two bodies.
The reverse direction, tag -> images, is ``POST /search`` with ``{"query": {"tag": ...}}``.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from service.deps import EmbedderDep, SettingsDep, SnapshotDep
from service.embedding import Embedder
from service.errors import InvalidQueryError, UnsupportedMediaTypeError
from service.limits import read_upload
from service.schemas import EmbedInput, TagOptions, TagRequest, TagResponse, error_responses
from service.tagging import tag_image

router = APIRouter(prefix="/tag", tags=["tag"])

MAX_FORM_FIELDS = 256

_MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "The image"},
        "k": {"type": "integer", "default": 5, "minimum": 1, "maximum": 100},
        "tags": {"type": "array", "items": {"type": "string"}, "description": "Candidate tags"},
    },
}
TAG_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
            "application/json": {"schema": TagRequest.model_json_schema()},
        },
    }
}


Body = TypeVar("Body", bound=BaseModel)


def _validated(model: type[Body], values: dict[str, Any] | bytes) -> Body:
    """Validate like a declared body would: errors become the usual 422 response."""
    try:
        if isinstance(values, bytes):
            return model.model_validate_json(values)
        return model.model_validate(values)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc


async def _from_multipart(request: Request, embedder: Embedder) -> tuple[np.ndarray, TagOptions]:
    async with request.form(max_files=1, max_fields=MAX_FORM_FIELDS) as form:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidQueryError("multipart field 'file' (the image to tag) is missing")
        tags = [value for value in form.getlist("tags") if isinstance(value, str)]
        values = {"k": form.get("k", 5), "tags": tags or None}
        options = _validated(TagOptions, values)
        data = await read_upload(file, embedder.max_upload_bytes)
    return await embedder.embed_image_bytes(data), options


async def _from_json(request: Request, embedder: Embedder) -> tuple[np.ndarray, TagOptions]:
    body = _validated(TagRequest, await request.body())
    return await embedder.embed([EmbedInput.model_validate({"image": body.image})]), body


@router.post(
    "",
    summary="Top-k classes (and ranked candidate tags) of an uploaded or base64 image",
    response_model=TagResponse,
    responses=error_responses(400, 413, 415, 422, 503),
    openapi_extra=TAG_REQUEST_BODY,
)
async def tag(
    request: Request, snapshot: SnapshotDep, embedder: EmbedderDep, settings: SettingsDep
) -> TagResponse:
    started = time.perf_counter()
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        vector, options = await _from_multipart(request, embedder)
    elif content_type.startswith("application/json"):
        vector, options = await _from_json(request, embedder)
    else:
        raise UnsupportedMediaTypeError(
            f"send multipart/form-data (field 'file') or application/json, not {content_type!r}"
        )
    classes, tags = await tag_image(
        vector, snapshot, embedder, k=options.k, tags=options.tags, max_tags=settings.max_inputs
    )
    return TagResponse(
        classes=classes,
        tags=tags,
        index_version=snapshot.version,
        took_ms=round((time.perf_counter() - started) * 1000, 3),
    )
