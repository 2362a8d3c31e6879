"""Frozen base towers: the raw features that trained heads are put on top of.

A :class:`Towers` turns images into ``image_dim`` features and texts into
``text_dim`` features; nothing here is trained. Two kinds:

- :class:`OfflineTowers` (``base="offline"``): EfficientNet-Lite0 pooled
  features (1280) concatenated with the image's ConSE vector (384, in e5 text
  space), and multilingual-e5-small for text. The ConSE half gives the image
  head a starting point that already lives near the texts; the pooled half
  carries what ImageNet's labels cannot name (most Korean dishes).
- :class:`EncoderTowers` (``base="openclip:..."`` or any other encoder spec):
  the base encoder's own normalised outputs, e.g. a CLIP model's image and
  text embeddings.

Images can be fed as PIL images (evaluation transform) or as ready tensors
(training augmentation, see :mod:`models.features`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from models.encoders.base import Encoder
from models.registry import load_encoder


class Towers(Protocol):
    """Frozen feature extractors for every modality."""

    @property
    def spec(self) -> str:
        """The base spec that rebuilds these towers (``offline``, ``openclip:...``)."""
        ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def image_dim(self) -> int: ...

    @property
    def text_dim(self) -> int: ...

    @property
    def device(self) -> str: ...

    def image_features(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def augmented_image_features(
        self, images: Sequence[Image.Image], views: int, seed: int
    ) -> np.ndarray:
        """(n, views, image_dim): random crops / flips of each image, seeded."""
        ...

    def text_features(self, texts: Sequence[str], *, query: bool) -> np.ndarray: ...


def _augment_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> object:
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(size, scale=(0.45, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def _augmented_batches(
    images: Sequence[Image.Image], views: int, seed: int, transform: object
) -> torch.Tensor:
    """(n * views, 3, H, W): ``views`` augmentations per image, reproducible per seed."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        tensors = [transform(img) for img in images for _ in range(views)]  # type: ignore[operator]
    finally:
        torch.random.set_rng_state(state)
    return torch.stack(tensors)


class OfflineTowers:
    """EfficientNet-Lite0 (+ ConSE) and multilingual-e5-small, as in the offline encoder."""

    def __init__(self, *, device: str = "auto") -> None:
        from models.encoders.offline import OfflineEncoder

        self._encoder = OfflineEncoder(device=device)

    @property
    def spec(self) -> str:
        return "offline"

    @property
    def fingerprint(self) -> str:
        return self._encoder.fingerprint

    @property
    def image_dim(self) -> int:
        return 1280 + self._encoder.dim

    @property
    def text_dim(self) -> int:
        return self._encoder.dim

    @property
    def device(self) -> str:
        return self._encoder.device

    def _features(self, batch: torch.Tensor) -> np.ndarray:
        pooled, logits = self._encoder.vision_features(batch)
        conse = self._encoder.conse(logits)
        return np.concatenate([pooled.cpu().numpy(), conse], axis=1).astype(np.float32)

    def image_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        step = self._encoder.image_batch_size
        parts = [
            self._features(self._encoder.preprocess_images(images[i : i + step]))
            for i in range(0, len(images), step)
        ]
        return np.concatenate(parts) if parts else np.empty((0, self.image_dim), np.float32)

    def augmented_image_features(
        self, images: Sequence[Image.Image], views: int, seed: int
    ) -> np.ndarray:
        from models.encoders import imagenet

        transform = _augment_transform(imagenet.INPUT_SIZE, imagenet.MEAN, imagenet.STD)
        batch = _augmented_batches(images, views, seed, transform)
        step = self._encoder.image_batch_size
        feats = np.concatenate(
            [self._features(batch[i : i + step]) for i in range(0, len(batch), step)]
        )
        return feats.reshape(len(images), views, self.image_dim)

    def text_features(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if query:
            return self._encoder.encode_texts(texts)
        return self._encoder.encode_passages(texts)


class EncoderTowers:
    """Any :class:`Encoder` used as frozen towers (its normalised outputs are the features)."""

    def __init__(self, spec: str, *, device: str = "auto", encoder: Encoder | None = None) -> None:
        self._spec = spec
        self._encoder = encoder if encoder is not None else load_encoder(spec, device=device)

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def fingerprint(self) -> str:
        return self._encoder.fingerprint

    @property
    def image_dim(self) -> int:
        return self._encoder.dim

    @property
    def text_dim(self) -> int:
        return self._encoder.dim

    @property
    def device(self) -> str:
        return self._encoder.device

    def image_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._encoder.encode_images(images)

    def augmented_image_features(
        self, images: Sequence[Image.Image], views: int, seed: int
    ) -> np.ndarray:
        # Generic encoders expose no tensor entry point: augment in PIL space.
        rng = np.random.default_rng(seed)
        out = np.empty((len(images), views, self.image_dim), dtype=np.float32)
        for v in range(views):
            flipped = [
                img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img
                for img in images
            ]
            out[:, v] = self._encoder.encode_images(flipped)
        return out

    def text_features(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        return self._encoder.encode_texts(texts)


def load_towers(base: str = "offline", *, device: str = "auto") -> Towers:
    """Towers for a base spec: ``offline`` or any encoder spec (``openclip:ARCH[:PRETRAINED]``)."""
    base = base.strip()
    if base == "offline":
        return OfflineTowers(device=device)
    if base.startswith("bundle:"):
        raise ValueError("a trained bundle cannot be the base of another bundle")
    return EncoderTowers(base, device=device)
