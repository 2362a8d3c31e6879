"""Validated inputs -> vectors, off the event loop.

Pre / core split (as infinity does): decoding (base64, PIL) runs in the thread pool,
so requests decode in parallel; the decoded inputs then go to the encode batcher
(service.batching), which encodes the inputs of concurrent requests together, one
modality queue each, in the one thread that owns the encoder.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from models.calibration import Calibration
from models.encoders import Encoder, l2_normalize
from models.encoders.base import fuse_modalities
from models.images import decode_base64_image, decode_image
from models.lexicon import Lexicon
from models.rerank import word_ngrams
from models.types import Recipe
from service.batching import EncodeBatcher, Kind
from service.errors import InvalidQueryError
from service.limits import check_base64_size
from service.schemas import EmbedInput

if TYPE_CHECKING:  # it imports torch, which the service does not need at start
    from models.set_encoding import SetEncoder

Decoded = str | Image.Image | Recipe


@dataclass(frozen=True)
class Embedder:
    encoder: Encoder
    batcher: EncodeBatcher
    lock: threading.Lock  # the encoder's; fusion holds it, the batcher holds it per batch
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
        decoded = await run_in_threadpool(self._decode_all, inputs)
        return await self._encode(decoded)

    async def embed_text_query(self, term: EmbedInput) -> np.ndarray:
        """A (1, dim) row for a typed text query, expanded through the query lexicon:
        the normalised sum of the text's vector and its gloss's (see models.lexicon)."""
        gloss = self.lexicon.gloss(term.text or "") if self.lexicon is not None else None
        if gloss is None:
            return await self.embed([term])
        vectors = await self.embed([term, EmbedInput.model_validate({"text": gloss})])
        return l2_normalize(vectors.sum(axis=0, keepdims=True))

    async def embed_text_parts(self, text: str) -> np.ndarray:
        """(n, dim) rows for the word n-grams of a text: its local features for a
        re-ranker (the packaged e5 exposes no token states; see models.rerank)."""
        return await self._encode(word_ngrams(text))

    async def embed_fused(self, inputs: Sequence[EmbedInput]) -> np.ndarray:
        """A (1, dim) row: every input is one modality of the same item, fused."""
        vectors = await self.embed(inputs)
        parts = {
            modality: vectors[[i for i, item in enumerate(inputs) if item.modality == modality]]
            for modality in {item.modality for item in inputs}
        }
        return await run_in_threadpool(self._fuse, parts)

    async def embed_set(self, term: EmbedInput) -> np.ndarray:
        """(K, dim) DivE set vectors of one text, image or recipe input, from the bundle's
        set heads (:mod:`models.set_encoding`); InvalidQueryError for a model without."""
        sets = self._set_encoder()
        self._check_text_size([term])
        decoded = await run_in_threadpool(self._decode, term)
        return await run_in_threadpool(self._set_of, sets, decoded)

    async def embed_image_bytes_set(self, data: bytes) -> np.ndarray:
        """(K, dim) DivE set vectors of raw image bytes (a multipart upload)."""
        sets = self._set_encoder()
        image = await run_in_threadpool(decode_image, data, max_pixels=self.max_image_pixels)
        return await run_in_threadpool(self._set_of, sets, image)

    def _set_encoder(self) -> SetEncoder:
        sets = getattr(self.encoder, "sets", None)
        if sets is None:
            raise InvalidQueryError("the model served has no set head")
        return sets

    def _set_of(self, sets: SetEncoder, decoded: Decoded) -> np.ndarray:
        with self.lock:  # the set heads run the encoder's towers
            if isinstance(decoded, str):
                return sets.text_sets([decoded])[0]
            if isinstance(decoded, Recipe):
                return sets.recipe_sets([decoded])[0]
            return sets.image_sets([decoded])[0]

    async def embed_image_bytes(self, data: bytes) -> np.ndarray:
        """A (1, dim) row for raw image bytes (a multipart upload)."""
        image = await run_in_threadpool(decode_image, data, max_pixels=self.max_image_pixels)
        return await self._encode([image])

    def _check_text_size(self, inputs: Sequence[EmbedInput]) -> None:
        """Bounds one request's encoder work: the batcher shares batches fairly, but a
        request of many long texts would still take the encoder for a long time."""
        total = sum(_text_chars(item) for item in inputs)
        if total > self.max_text_chars:
            raise InvalidQueryError(
                f"the texts of this request total {total} characters; at most "
                f"{self.max_text_chars} are embedded per request (send fewer or shorter texts)"
            )

    def _fuse(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        with self.lock:
            return fuse_modalities(self.encoder, parts).reshape(1, -1)

    def _decode_all(self, inputs: Sequence[EmbedInput]) -> list[Decoded]:
        return [self._decode(item) for item in inputs]

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

    async def _encode(self, decoded: Sequence[Decoded]) -> np.ndarray:
        """Each kind's inputs go to its batcher queue; the kinds are encoded concurrently."""
        positions: dict[Kind, list[int]] = {}
        for i, value in enumerate(decoded):
            positions.setdefault(_kind_of(value), []).append(i)
        kinds = list(positions)
        encoded = await asyncio.gather(
            *(self.batcher.encode(kind, [decoded[i] for i in positions[kind]]) for kind in kinds)
        )
        vectors = np.empty((len(decoded), self.encoder.dim), dtype=np.float32)
        for kind, rows in zip(kinds, encoded, strict=True):
            vectors[positions[kind]] = rows
        return vectors


def _kind_of(value: Decoded) -> Kind:
    if isinstance(value, str):
        return "text"
    if isinstance(value, Image.Image):
        return "image"
    return "recipe"


def _text_chars(item: EmbedInput) -> int:
    if item.text is not None:
        return len(item.text)
    if item.recipe is not None:
        recipe = item.recipe
        parts = (recipe.title, *recipe.ingredients, *recipe.instructions)
        return sum(len(part) for part in parts)
    return 0
