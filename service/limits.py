"""Size limits applied while bytes arrive, so no request is buffered past them.

Three layers, cheapest first: the whole request body (``RequestBodyLimitMiddleware``:
Content-Length up front, then a running count for chunked bodies), each uploaded
file (``read_upload``, in chunks) and each base64 image string (by length, before
decoding).
"""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import UploadTooLargeError

UPLOAD_CHUNK_BYTES = 64 * 1024
# JSON framing, form fields and multipart boundaries around the payload proper.
BODY_OVERHEAD_BYTES = 1024 * 1024
MIB = 1024 * 1024


def base64_length(n_bytes: int) -> int:
    """Characters of padded base64 for ``n_bytes`` bytes."""
    return 4 * ((n_bytes + 2) // 3)


def request_body_limit(max_upload_bytes: int) -> int:
    """Largest request body accepted: one max-size image as base64 plus framing.

    Several small images fit in one /embed call; several max-size ones must be sent
    in separate calls. That bound keeps a request's memory at a few times the upload
    limit however many inputs it lists.
    """
    return base64_length(max_upload_bytes) + BODY_OVERHEAD_BYTES


def _too_large_message(what: str, limit: int) -> str:
    return f"{what} is larger than the limit of {limit} bytes ({limit / MIB:.1f} MiB)"


def check_base64_size(value: str, max_upload_bytes: int) -> None:
    """Refuse a base64 (or data URI) image whose decoded size must exceed the limit."""
    payload = value.partition(",")[2] if value.startswith("data:") else value
    if len(payload) > base64_length(max_upload_bytes):
        raise UploadTooLargeError(_too_large_message("base64 image", max_upload_bytes))


async def read_upload(file: UploadFile, max_upload_bytes: int) -> bytes:
    """Read an uploaded file in chunks, stopping as soon as it passes the limit."""
    chunks: list[bytes] = []
    total = 0
    while chunk := await file.read(UPLOAD_CHUNK_BYTES):
        total += len(chunk)
        if total > max_upload_bytes:
            raise UploadTooLargeError(_too_large_message("uploaded file", max_upload_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


class RequestBodyLimitMiddleware:
    """Answers 413 to request bodies over ``max_body_bytes`` before they are buffered."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            response = JSONResponse(
                {"detail": _too_large_message("request body", self.max_body_bytes)},
                status_code=413,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Raised inside the route's body parsing; an HTTPException is the
                    # one error type FastAPI re-raises there instead of turning into 400.
                    raise HTTPException(
                        413, _too_large_message("request body", self.max_body_bytes)
                    )
            return message

        return counting_receive


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
