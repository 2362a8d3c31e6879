"""An item's K set vectors (DivE) from a bundle's set heads (:mod:`models.set_head`).

- image: the ``image`` head over the photo's regions (cells of the offline image
  tower's last feature map, :meth:`models.towers.OfflineTowers.image_regions`) plus its
  joint vector. Other bases expose no regions: the head then sees the joint vector alone;
- text: the ``text`` head over the joint vectors of the text's word n-grams
  (:func:`models.rerank.word_ngrams`: the packaged e5 exposes no token states) plus
  the text's joint vector;
- recipe: the ``text`` head over the n-grams of its title and ingredients plus the
  recipe's joint vector.

Each set is (K, dim), unit rows. An untrained head gives K copies of the joint vector.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from functools import cached_property
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from models.rerank import word_ngrams
from models.set_head import SetHead
from models.towers import OfflineTowers, Towers
from models.types import Recipe


def recipe_set_text(recipe: Recipe) -> str:
    """The text whose n-grams are a recipe's parts: its title and ingredients."""
    return " ".join((recipe.title, *recipe.ingredients))


OFFLINE_REGION_DIM = 1280  # EfficientNet-Lite0's last feature map


def region_dim(towers: Towers, dim: int) -> int:
    """Width of the regions an image head is fed: the feature map's for the offline base;
    other bases feed none, so any width does (the joint one)."""
    return OFFLINE_REGION_DIM if isinstance(towers, OfflineTowers) else dim


def image_regions(towers: Towers, images: Sequence[Image.Image], local_dim: int) -> np.ndarray:
    """(n, cells, local_dim) float16 regions of the offline base; (n, 0, local_dim) for other
    bases, which expose none (the image head then sees the joint vector alone)."""
    if isinstance(towers, OfflineTowers):
        return towers.image_regions(images)
    return np.zeros((len(images), 0, local_dim), np.float16)


class JointEncoder(Protocol):
    """What set encoding needs of a bundle encoder (one vector per input)."""

    @property
    def towers(self) -> Towers: ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray: ...


class SetEncoder:
    """K vectors per image, text or recipe, from a bundle's heads by modality."""

    def __init__(self, encoder: JointEncoder, heads: Mapping[str, SetHead]) -> None:
        slots = {head.config.slots for head in heads.values()}
        if len(slots) != 1:
            raise ValueError(f"a bundle's set heads must share one slot count, got {slots}")
        self.encoder = encoder
        self.heads = dict(heads)
        self.slots = slots.pop()

    def has(self, modality: str) -> bool:
        return modality in self.heads

    @cached_property
    def digest(self) -> str:
        """sha256 of every head's modality, config and weights: set heads lie outside the
        model fingerprint, so this says whether stored sets came from these very heads."""
        digest = hashlib.sha256()
        for modality in sorted(self.heads):
            head = self.heads[modality]
            config = json.dumps(asdict(head.config), sort_keys=True)
            digest.update(f"{modality}:{config}".encode())
            for name, tensor in sorted(head.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def image_sets(self, images: Sequence[Image.Image]) -> np.ndarray:
        head = self.heads["image"]
        whole = self.encoder.encode_images(images)
        regions = image_regions(self.encoder.towers, images, head.config.local_dim)
        return self._run(head, regions.astype(np.float32), None, whole)

    def text_sets(self, texts: Sequence[str]) -> np.ndarray:
        return self._over_ngrams(list(texts), self.encoder.encode_texts(texts))

    def recipe_sets(self, recipes: Sequence[Recipe]) -> np.ndarray:
        sources = [recipe_set_text(r) for r in recipes]
        return self._over_ngrams(sources, self.encoder.encode_recipes(recipes))

    def _over_ngrams(self, texts: list[str], whole: np.ndarray) -> np.ndarray:
        grams = [word_ngrams(text) for text in texts]
        vectors = self.encoder.encode_texts([g for each in grams for g in each])
        longest = max((len(each) for each in grams), default=0)
        parts = np.zeros((len(texts), longest, whole.shape[1]), np.float32)
        mask = np.zeros((len(texts), longest), bool)
        at = 0
        for i, each in enumerate(grams):
            parts[i, : len(each)], mask[i, : len(each)] = vectors[at : at + len(each)], True
            at += len(each)
        return self._run(self.heads["text"], parts, mask, whole)

    def _run(
        self, head: SetHead, local: np.ndarray, mask: np.ndarray | None, whole: np.ndarray
    ) -> np.ndarray:
        if len(whole) == 0:
            return np.empty((0, self.slots, whole.shape[1]), np.float32)
        device = next(head.parameters()).device
        with torch.inference_mode():
            out = head(
                torch.from_numpy(np.ascontiguousarray(local)).to(device),
                None if mask is None else torch.from_numpy(mask).to(device),
                torch.from_numpy(np.ascontiguousarray(whole, dtype=np.float32)).to(device),
            )
        return out.float().cpu().numpy()
