"""Replay the bad inputs of issue #18 against a running server.

Every answer must be a 4xx with a JSON body, and ``/healthz`` must still answer 200
after each one. Works against any model; the admin cases need the server's token
(without it they check the 401/403 instead).

Usage: python scripts/probe_inputs.py http://127.0.0.1:8000 [--admin-token TOKEN]
Exit status 1 when any case fails; each case prints one line.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

SURROGATE = "\ud800"
LONG_TEXT = "kimchi stew " * 700  # 8400 characters: over the per-text limit


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


Send = Callable[[httpx.Client], Answer]


def _answer(response: httpx.Response) -> Answer:
    return Answer(response.status_code, response.headers.get("content-type", ""), response.content)


def post_json(path: str, body: object, *, admin: bool = False) -> Send:
    """POST ``body`` as JSON text written by the json module (it keeps lone surrogates)."""
    raw = json.dumps(body).encode()  # ensure_ascii: "\ud800" travels as an escape
    return post_raw(path, raw, admin=admin)


def post_raw(path: str, raw: bytes, *, admin: bool = False) -> Send:
    def send(client: httpx.Client) -> Answer:
        headers = {"content-type": "application/json"}
        if admin:
            headers["authorization"] = client.headers.get("x-probe-admin", "")
        return _answer(client.post(path, content=raw, headers=headers))

    return send


def get(path: str) -> Send:
    return lambda client: _answer(client.get(path))


def raw_http(request: bytes) -> Send:
    """Bytes straight onto a socket: requests no HTTP client would send."""

    def send(client: httpx.Client) -> Answer:
        url = urlsplit(str(client.base_url))
        with socket.create_connection((url.hostname or "", url.port or 80), timeout=10) as sock:
            sock.sendall(request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        return Answer(int(lines[0].split()[1]), content_type, body)

    return send


def cases() -> dict[str, Send]:
    search_text = {"query": {"text": "kimchi"}}
    return {
        "surrogate in search text": post_json("/search", {"query": {"text": SURROGATE}}),
        "surrogate in item_id": post_json("/search", {"query": {"item_id": SURROGATE}}),
        "surrogate in tag": post_json("/search", {"query": {"tag": SURROGATE}}),
        "surrogate in filter value": post_json(
            "/search", {**search_text, "filter": {"cuisine": SURROGATE}}
        ),
        "surrogate in filter name": post_json("/search", {**search_text, "filter": {SURROGATE: 1}}),
        "surrogate in recipe title": post_json(
            "/embed", {"inputs": [{"recipe": {"title": "a" + SURROGATE}}]}
        ),
        "surrogate in compose term": post_json(
            "/search", {"query": {"compose": [{"text": SURROGATE, "weight": 1}]}}
        ),
        "surrogate in /tag tags": post_json("/tag", {"image": "aGk=", "tags": [SURROGATE]}),
        "surrogate in reindex source": post_json(
            "/admin/reindex", {"source": SURROGATE, "format": "kfood"}, admin=True
        ),
        "any-of filter with 1001 values": post_json(
            "/search", {**search_text, "filter": {"cuisine": [str(i) for i in range(1001)]}}
        ),
        "any-of filter with 999 unknown-field values": post_json(
            "/search", {**search_text, "filter": {"nope": [str(i) for i in range(999)]}}
        ),
        "reindex source of 300 characters": post_json(
            "/admin/reindex", {"source": "a" * 300, "format": "kfood"}, admin=True
        ),
        "reindex source of 5000 characters": post_json(
            "/admin/reindex", {"source": "a/" * 2500, "format": "kfood"}, admin=True
        ),
        "text over the per-text limit": post_json("/embed", {"inputs": [{"text": LONG_TEXT}]}),
        "texts over the per-request total": post_json(
            "/embed", {"inputs": [{"text": LONG_TEXT[:8000]}] * 64}
        ),
        "recipe with 1000 ingredients": post_json(
            "/embed", {"inputs": [{"recipe": {"title": "t", "ingredients": ["x"] * 1000}}]}
        ),
        "invalid UTF-8 body": post_raw("/search", b'{"query": {"text": "\xff\xfe"}}'),
        "deeply nested JSON": post_raw("/search", b'{"query": ' + b"[" * 100_000 + b"]" * 100_000),
        "invalid Content-Length": raw_http(
            b"POST /search HTTP/1.1\r\nHost: probe\r\nContent-Type: application/json\r\n"
            b"Content-Length: abc\r\n\r\n{}"
        ),
        "negative Content-Length": raw_http(
            b"POST /search HTTP/1.1\r\nHost: probe\r\nContent-Type: application/json\r\n"
            b"Content-Length: -5\r\n\r\n{}"
        ),
        "invalid UTF-8 in an item id": get("/items/%ED%A0%80"),
        "k far too large": post_json("/search", {**search_text, "k": 10**12}),
    }


def check(client: httpx.Client, name: str, send: Send) -> str | None:
    """None when the case passes, else why it failed."""
    try:
        answer = send(client)
    except (httpx.HTTPError, OSError) as exc:
        return f"no answer ({type(exc).__name__}: {exc})"
    problems = []
    if not 400 <= answer.status < 500:
        problems.append(f"status {answer.status}")
    if not answer.content_type.startswith("application/json"):
        problems.append(f"content-type {answer.content_type!r}")
    else:
        try:
            json.loads(answer.body)
        except ValueError:
            problems.append("body is not JSON")
    try:
        health = client.get("/healthz").status_code
    except httpx.HTTPError as exc:
        health = f"unreachable ({exc})"  # type: ignore[assignment]
    if health != 200:
        problems.append(f"/healthz then answered {health}")
    return "; ".join(problems) or None


def replay(base_url: str, admin_token: str | None = None) -> dict[str, str | None]:
    """Each case's failure (None: passed), in order."""
    headers = {"x-probe-admin": f"Bearer {admin_token}"} if admin_token else {}
    with httpx.Client(base_url=base_url, timeout=120, headers=headers) as client:
        return {name: check(client, name, send) for name, send in cases().items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("--admin-token")
    args = parser.parse_args()
    results = replay(args.base_url, args.admin_token)
    for name, failure in results.items():
        print(f"{'FAIL' if failure else 'ok  '} {name}{': ' + failure if failure else ''}")
    return 1 if any(results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
