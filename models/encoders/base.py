"""The seam every backend implements.

All encode_* methods return float32 arrays of shape (n, dim) whose rows are
L2-normalised, so inner product equals cosine similarity everywhere downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from models.types import Recipe


@runtime_checkable
class Encoder(Protocol):
    """Maps images, texts and recipes into one joint space."""

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """Stable hash of config + weights; snapshots record it."""
        ...

    @property
    def device(self) -> str: ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray: ...


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation to float32; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, eps)).astype(np.float32, copy=False)
