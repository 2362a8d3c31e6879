"""Vectors as base64 of little-endian float32: 4 bytes a value, no JSON number parsing.

A 384-d vector is about 2 KB of base64 against about 8 KB of JSON floats, and it
decodes in C (``np.frombuffer``) where a JSON list costs a Python float per value
on parsing and on validation. Clients build it with
``base64.b64encode(np.asarray(v, "<f4").tobytes())``.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

FLOAT32_LE = np.dtype("<f4")


def b64_length(dim: int) -> int:
    """Characters of the base64 (with padding) of ``dim`` float32 values."""
    return 4 * -(-(dim * FLOAT32_LE.itemsize) // 3)


def decode_vector(text: str) -> np.ndarray:
    """The float32 values of ``text``; ValueError saying what is wrong with it."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"vector_b64 is not valid base64 ({exc})") from exc
    if not raw or len(raw) % FLOAT32_LE.itemsize:
        raise ValueError(
            f"vector_b64 must hold little-endian float32 values (4 bytes each), "
            f"got {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=FLOAT32_LE)


def encode_vectors(vectors: np.ndarray) -> list[str]:
    """One base64 string per row, of its values as little-endian float32."""
    rows = np.ascontiguousarray(vectors, dtype=FLOAT32_LE)
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in rows]
