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


# Characters a token spans at most, for all tokenizers here (E5's sentencepiece, CLIP's
# BPE) bar runs of whitespace: a text cut to max_tokens * this keeps every token the
# encoder would, and the tokenizer never has to read megabytes to keep the first few.
MAX_CHARS_PER_TOKEN = 32


def cut_for_tokens(text: str, max_tokens: int) -> str:
    """``text`` cut to the characters that can hold its first ``max_tokens`` tokens."""
    return text[: max_tokens * MAX_CHARS_PER_TOKEN]


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation to float32; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    with np.errstate(over="ignore"):  # an overflow is handled just below
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if not np.isfinite(norms).all():
        # Squares of values over ~1.8e19 overflow float32: an infinite norm would turn a
        # huge but finite vector into zeros. Such rows are scaled down first (rare path).
        vectors = vectors / np.max(np.abs(vectors), axis=-1, keepdims=True)
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, eps)).astype(np.float32, copy=False)


def fuse_modalities(encoder: Encoder, parts: dict[str, np.ndarray]) -> np.ndarray:
    """One vector for one item from its per-modality vectors (keys image / text / recipe).

    Several vectors of one modality are averaged first. An encoder with a
    trained fusion model (a bundle's ``fuse``) fuses them; any other encoder
    gets the normalised mean, the fusion that needs no training.
    """
    if not parts:
        raise ValueError("nothing to fuse")
    means = {
        name: l2_normalize(np.asarray(v).reshape(-1, encoder.dim).mean(0, keepdims=True))[0]
        for name, v in parts.items()
    }
    fuse = getattr(encoder, "fuse", None)
    if callable(fuse):
        return np.asarray(fuse(means), dtype=np.float32)
    return l2_normalize(np.mean(list(means.values()), axis=0, keepdims=True))[0]
