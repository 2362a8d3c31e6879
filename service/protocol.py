"""uvicorn's HTTP/1.1 protocol, with its own error answers in the API's JSON shape.

A request that is not valid HTTP (an unparsable Content-Length, a malformed request
line) never reaches the app: uvicorn answers it with a plain-text 400. This protocol
answers the same status with ``{"detail": "..."}`` like every other error.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class JsonErrorH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"detail": msg}).encode()
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
