"""Helpers shared by the API tests: settings, sample images, error text."""

from __future__ import annotations

import base64
import io
import json
import struct
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import SecretStr

from service.settings import Settings
from tests.polling import poll

ADMIN_TOKEN = "test-admin-token"
DEADLINE_S = 30.0


def wait_for(client: Any, path: str, done: Callable[[Any], bool]) -> Any:
    """GET ``path`` until ``done(response)`` or the deadline; returns the last response."""
    return poll(lambda: client.get(path), done, timeout_s=DEADLINE_S)


def make_settings(index_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model": "offline",
        "device": "cpu",
        "index_dir": index_dir,
        "admin_token": SecretStr(ADMIN_TOKEN),
        "reload_interval_s": 0.1,
        "redis_url": None,
    }
    values.update(overrides)
    return Settings(**values)


def rq_settings_of_own_queue(index_dir: Path, redis_url: str, **overrides: Any) -> Settings:
    """Settings on Redis with an RQ queue of their own, so a stray worker of another
    test never takes these jobs."""
    queue_name = f"test-{uuid.uuid4().hex[:8]}"
    return make_settings(index_dir, redis_url=redis_url, queue_name=queue_name, **overrides)


def image_bytes(
    color: tuple[int, int, int] = (200, 80, 40), size: int = 32, fmt: str = "PNG"
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format=fmt)
    return buffer.getvalue()


def noise_png(size: int) -> bytes:
    """A PNG of random pixels: it does not compress, so it is about 3 * size**2 bytes."""
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG of a few dozen bytes whose header declares width x height RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def detail_text(response: Any) -> str:
    """The error detail as one string (domain errors: a string; schema errors: a list)."""
    detail = response.json()["detail"]
    return detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
