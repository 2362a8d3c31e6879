"""uvicorn's HTTP/1.1 protocols, with their own error answers in the API's JSON shape.

A request that is not valid HTTP (an unparsable Content-Length, a malformed request
line) never reaches the app: uvicorn answers it with a plain-text 400. These protocols
answer the same status with ``{"detail": "..."}`` like every other error.

This module holds the h11 one; ``service.protocol_httptools`` the httptools one, and
``service.http_stack`` chooses between them.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def json_error_body(msg: str) -> bytes:
    return json.dumps({"detail": msg}).encode()


class JsonErrorH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = json_error_body(msg)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()
