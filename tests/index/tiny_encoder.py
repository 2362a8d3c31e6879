"""A tiny but real Encoder for index tests: seeded random projections.

Images: 8x8 RGB thumbnail -> fixed random projection. Texts: hashed bag of
character trigrams -> fixed random projection. Recipes: their flat text. Rows
are L2-normalised float32, as the protocol requires. Similar inputs map to
similar vectors, so retrieval results are meaningful enough to assert on.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from models.encoders.base import l2_normalize
from models.types import Recipe

_THUMB = 8
_BUCKETS = 512


class TinyEncoder:
    def __init__(self, dim: int = 32, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self._dim = dim
        self._seed = seed
        self._image_proj = rng.standard_normal((_THUMB * _THUMB * 3, dim)).astype(np.float32)
        self._text_proj = rng.standard_normal((_BUCKETS, dim)).astype(np.float32)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"tiny-encoder/{self._dim}/{self._seed}".encode()).hexdigest()[:16]

    @property
    def device(self) -> str:
        return "cpu"

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        pixels = [
            np.asarray(img.convert("RGB").resize((_THUMB, _THUMB)), np.float32).ravel() / 255.0
            for img in images
        ]
        centred = np.stack(pixels) - 0.5 if pixels else np.zeros((0, _THUMB * _THUMB * 3))
        return l2_normalize(centred @ self._image_proj)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        bags = np.zeros((len(texts), _BUCKETS), np.float32)
        for row, text in enumerate(texts):
            padded = f"  {text.lower()}  "
            for i in range(len(padded) - 2):
                bags[row, zlib.crc32(padded[i : i + 3].encode()) % _BUCKETS] += 1.0
        return l2_normalize(bags @ self._text_proj)

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray:
        return self.encode_texts([recipe.as_text() for recipe in recipes])


class CountingEncoder(TinyEncoder):
    """The tiny encoder, counting the inputs it is given per modality."""

    def __init__(self, dim: int = 32, seed: int = 0) -> None:
        super().__init__(dim, seed)
        self.inputs = {"image": 0, "text": 0, "recipe": 0}

    @property
    def total(self) -> int:
        return sum(self.inputs.values())

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.inputs["image"] += len(images)
        return super().encode_images(images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.inputs["text"] += len(texts)
        return super().encode_texts(texts)

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray:
        self.inputs["recipe"] += len(recipes)
        # Not super(): the tiny encoder's recipes go through encode_texts, counted as texts.
        return TinyEncoder.encode_texts(self, [recipe.as_text() for recipe in recipes])
