"""Domain exceptions of the HTTP layer and their mapping to HTTP responses.

This is the only place that decides status codes for domain errors: code below the
routes raises plain exceptions (these, or the ones from ``models`` and ``index``)
and the handlers registered here turn them into ``{"detail": "..."}`` responses.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from index.catalog import FilterError
from index.prototypes import PrototypeOptionsError
from index.snapshot import (
    DimensionMismatchError,
    InvalidQueryError,
    SnapshotError,
    UnknownItemError,
)
from models.images import ImageTooLargeError, InvalidImageError
from service.jobs import JobQueueUnavailableError
from service.reindex import InvalidReindexError

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of the HTTP layer's own domain errors; the message is the response detail."""


class ModelNotReadyError(ServiceError):
    """The encoder is still loading (or failed to load)."""


class SnapshotNotReadyError(ServiceError):
    """No index snapshot is loaded yet."""


class ItemNotFoundError(ServiceError, LookupError):
    def __init__(self, item_id: str) -> None:
        super().__init__(f"no item with id {item_id!r} in the current index")
        self.item_id = item_id


class NoLiveIndexError(ServiceError):
    """Item changes need a live snapshot to apply them to."""


class RerankerUnavailableError(ServiceError, ValueError):
    """A search asks for a re-ranker the model served does not carry (trained)."""


class ImageNotFoundError(ServiceError, LookupError):
    """A known item without a photo to serve (none indexed, or its file is gone)."""


class JobNotFoundError(ServiceError, LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class UploadTooLargeError(ServiceError, ValueError):
    """An upload or base64 image, or a whole request body, over the configured limit."""


class UnsupportedMediaTypeError(ServiceError, ValueError):
    """A request body in a Content-Type the route does not take."""


class AdminDisabledError(ServiceError):
    """Admin routes refuse every caller while no token is configured."""


class NotAuthenticatedError(ServiceError):
    """Missing or wrong admin bearer token."""


# Most specific classes first: the first isinstance match wins.
_STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (UploadTooLargeError, 413),
    (ImageTooLargeError, 413),
    (InvalidImageError, 422),
    (RerankerUnavailableError, 422),
    (InvalidQueryError, 422),  # the index's, raised by the routes too (k, vector, kinds)
    (DimensionMismatchError, 422),
    (InvalidReindexError, 422),
    (FilterError, 422),
    (PrototypeOptionsError, 422),
    (UnsupportedMediaTypeError, 415),
    (ItemNotFoundError, 404),
    (ImageNotFoundError, 404),
    (UnknownItemError, 404),
    (JobNotFoundError, 404),
    (NoLiveIndexError, 409),
    (NotAuthenticatedError, 401),
    (AdminDisabledError, 403),
    (ModelNotReadyError, 503),
    (SnapshotNotReadyError, 503),
    (JobQueueUnavailableError, 503),
    (SnapshotError, 503),  # no snapshot, fingerprint mismatch, corrupt files
)


def status_for(exc: Exception) -> int:
    for error_type, status in _STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return status
    raise TypeError(f"no HTTP status mapped for {type(exc).__name__}")


def _headers_for(exc: Exception) -> dict[str, str] | None:
    if isinstance(exc, NotAuthenticatedError):
        return {"WWW-Authenticate": "Bearer"}
    return None


def error_response(exc: Exception) -> JSONResponse:
    status = status_for(exc)
    if status >= 500:
        logger.info("%s: %s", type(exc).__name__, exc)
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=_headers_for(exc))


def _handler(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)


def _validation_handler(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 shape, but long inputs are not echoed: a rejected 10 MB base64
    string must not come back in the response."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": jsonable_encoder([_brief(e) for e in errors])}, status_code=422)


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    """FastAPI answers 400 to a JSON body it could not parse for any reason but a syntax
    error (invalid UTF-8, nesting deeper than the parser's recursion limit); those are
    unusable bodies like any other, so they get the 422 a syntax error gets."""
    if isinstance(exc, HTTPException) and exc.status_code == 400 and exc.__cause__ is not None:
        cause = type(exc.__cause__).__name__
        error = {"type": "json_invalid", "loc": ["body"], "msg": f"unreadable JSON body ({cause})"}
        return JSONResponse({"detail": [error]}, status_code=422)
    return await http_exception_handler(request, cast(HTTPException, exc))


ECHO_MAX_CHARS = 100  # short scalar inputs help the caller see what was wrong


def _brief(error: dict[str, Any]) -> dict[str, Any]:
    brief: dict[str, Any] = {key: error[key] for key in ("type", "loc", "msg") if key in error}
    value = error.get("input")
    finite = not isinstance(value, float) or math.isfinite(value)  # JSON has no Infinity
    scalar = isinstance(value, str | int | float | bool) and finite
    if scalar and len(str(value)) <= ECHO_MAX_CHARS and _encodable(str(value)):
        brief["input"] = value
    return brief


def _encodable(text: str) -> bool:
    """False for text with lone surrogates, which a JSON response cannot carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def register_error_handlers(app: FastAPI) -> None:
    """Map every domain error above onto its status code, once, for the whole app."""
    handler: Callable[[Request, Exception], JSONResponse] = _handler
    for error_type, _status in _STATUS_BY_ERROR:
        app.add_exception_handler(error_type, handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(HTTPException, _http_error_handler)
