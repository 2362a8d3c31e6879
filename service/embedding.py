"""Validated inputs -> vectors, off the event loop.

Pre / core split (as infinity does): decoding (base64, PIL) happens in the worker
thread without the encoder lock, so requests decode in parallel; only the encode_*
calls are serialised, because encoders are not necessarily thread-safe. Inputs of
one kind go to the encoder as one batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from models.calibration import Calibration
from models.encoders import Encoder, l2_normalize
from models.encoders.base import fuse_modalities
from models.images import decode_base64_image, decode_image
from models.lexicon import Lexicon
from models.types import Recipe
from service.errors import InvalidQueryError
from service.limits import check_base64_size
from service.schemas import EmbedInput

Decoded = str | Image.Image | Recipe
T = TypeVar("T", str, Image.Image, Recipe)


@dataclass(frozen=True)
class Embedder:
    encoder: Encoder
    lock: threading.Lock
    max_upload_bytes: int
    max_image_pixels: int
    max_text_chars: int
    lexicon: Lexicon | None = None

    @property
    def calibration(self) -> Calibration | None:
        """The model's confidence curves, when it has them (trained bundles)."""
        found = getattr(self.encoder, "calibration", None)
        return found if isinstance(found, Calibration) else None

    async def embed(self, inputs: Sequence[EmbedInput]) -> np.ndarray:
        """One L2-normalised float32 row per input, in input order."""
        self._check_text_size(inputs)
        return await run_in_threadpool(self._decode_and_encode, inputs)

    async def embed_text_query(self, term: EmbedInput) -> np.ndarray:
        """A (1, dim) row for a typed text query, expanded through the query lexicon:
        the normalised sum of the text's vector and its gloss's (see models.lexicon)."""
        gloss = self.lexicon.gloss(term.text or "") if self.lexicon is not None else None
        if gloss is None:
            return await self.embed([term])
        vectors = await self.embed([term, EmbedInput.model_validate({"text": gloss})])
        return l2_normalize(vectors.sum(axis=0, keepdims=True))

    async def embed_fused(self, inputs: Sequence[EmbedInput]) -> np.ndarray:
        """A (1, dim) row: every input is one modality of the same item, fused."""
        self._check_text_size(inputs)
        return await run_in_threadpool(self._decode_encode_and_fuse, inputs)

    def _check_text_size(self, inputs: Sequence[EmbedInput]) -> None:
        """Bounds one request's encoder time: encoding holds the encoder lock, so a
        request of many long texts would stall every other search meanwhile."""
        total = sum(_text_chars(item) for item in inputs)
        if total > self.max_text_chars:
            raise InvalidQueryError(
                f"the texts of this request total {total} characters; at most "
                f"{self.max_text_chars} are embedded per request (send fewer or shorter texts)"
            )

    def _decode_encode_and_fuse(self, inputs: Sequence[EmbedInput]) -> np.ndarray:
        vectors = self._decode_and_encode(inputs)
        parts = {
            modality: vectors[[i for i, item in enumerate(inputs) if item.modality == modality]]
            for modality in {item.modality for item in inputs}
        }
        with self.lock:
            return fuse_modalities(self.encoder, parts).reshape(1, -1)

    async def embed_image_bytes(self, data: bytes) -> np.ndarray:
        """A (1, dim) row for raw image bytes (a multipart upload)."""
        return await run_in_threadpool(self._decode_bytes_and_encode, data)

    def _decode_and_encode(self, inputs: Sequence[EmbedInput]) -> np.ndarray:
        return self._encode([self._decode(item) for item in inputs])

    def _decode_bytes_and_encode(self, data: bytes) -> np.ndarray:
        return self._encode([decode_image(data, max_pixels=self.max_image_pixels)])

    def _decode(self, item: EmbedInput) -> Decoded:
        match item.modality:
            case "text" if item.text is not None:
                return item.text
            case "image" if item.image is not None:
                check_base64_size(item.image, self.max_upload_bytes)
                return decode_base64_image(item.image, max_pixels=self.max_image_pixels)
            case "recipe" if item.recipe is not None:
                return item.recipe.to_recipe()
        raise ValueError(f"cannot embed a {item.modality!r} input")

    def _encode(self, decoded: Sequence[Decoded]) -> np.ndarray:
        vectors = np.empty((len(decoded), self.encoder.dim), dtype=np.float32)
        self._encode_kind(vectors, decoded, str, self.encoder.encode_texts)
        self._encode_kind(vectors, decoded, Image.Image, self.encoder.encode_images)
        self._encode_kind(vectors, decoded, Recipe, self.encoder.encode_recipes)
        return vectors

    def _encode_kind(
        self,
        out: np.ndarray,
        decoded: Sequence[Decoded],
        kind: type[T],
        encode: Callable[[list[T]], np.ndarray],
    ) -> None:
        """Encode every input of one kind as one batch into its rows of ``out``."""
        positions = [i for i, value in enumerate(decoded) if isinstance(value, kind)]
        if not positions:
            return
        batch: list[T] = [value for value in decoded if isinstance(value, kind)]
        with self.lock:
            out[positions] = encode(batch)


def _text_chars(item: EmbedInput) -> int:
    if item.text is not None:
        return len(item.text)
    if item.recipe is not None:
        recipe = item.recipe
        parts = (recipe.title, *recipe.ingredients, *recipe.instructions)
        return sum(len(part) for part in parts)
    return 0
