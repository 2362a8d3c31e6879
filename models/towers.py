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
(training augmentation, see :mod:`training.features`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cached_property
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from models.encoders import imagenet
from models.encoders.base import Encoder
from models.encoders.offline import OfflineEncoder
from models.encoders.specs import load_base_encoder
from models.vision_top import SPLIT_STAGE, VisionTop, run_bottom, top_digest


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

    def __init__(
        self,
        *,
        device: str = "auto",
        tuned_top: VisionTop | None = None,
        encoder: OfflineEncoder | None = None,
        image_size: int | None = None,
    ) -> None:
        self._encoder = encoder if encoder is not None else OfflineEncoder(device=device)
        # Inference input size; None = the network's own 224. Training (cached maps,
        # augmented views) always runs at 224: this only changes how photos are embedded.
        self._image_size = image_size
        self._stage = tuned_top.split_stage if tuned_top is not None else SPLIT_STAGE
        self._tuned_top = (
            tuned_top.to(self._encoder.device, self._encoder.vision_dtype).eval()
            if tuned_top is not None
            else None
        )

    @property
    def spec(self) -> str:
        return "offline"

    @property
    def fingerprint(self) -> str:
        text = self._encoder.fingerprint
        if self._tuned_top is not None:
            text += f"+top{self._stage}-{top_digest(self._tuned_top)}"
        return text + (f"@{self._image_size}px" if self._image_size is not None else "")

    @property
    def base_fingerprint(self) -> str:
        """The fingerprint of the untuned towers this one was built on."""
        return self._encoder.fingerprint

    @cached_property
    def original_top(self) -> VisionTop:
        """The untuned top at this towers' cut (built on first use: untuned towers run the
        whole network and never need it). It keeps producing the ImageNet logits ConSE
        reads; a tuned top (see training.tower_tuning) only replaces the pooled features."""
        return VisionTop(self._encoder.vision_network, self._stage).eval()

    def original_top_at(self, stage: int) -> VisionTop:
        """A fresh copy of the untuned top that starts at ``stage``."""
        if stage == self._stage:
            return copy.deepcopy(self.original_top)
        return VisionTop(self._encoder.vision_network, stage).eval()

    @property
    def tuned_top(self) -> VisionTop | None:
        return self._tuned_top

    def with_tuned_top(self, top: VisionTop) -> OfflineTowers:
        """The same encoder (loaded once) with ``top`` in place of the pooled-feature top."""
        return OfflineTowers(tuned_top=top, encoder=self._encoder, image_size=self._image_size)

    @property
    def image_size(self) -> int:
        """The side of the square crop photos are embedded at."""
        return self._image_size if self._image_size is not None else imagenet.INPUT_SIZE

    def with_image_size(self, size: int) -> OfflineTowers:
        """The same towers embedding photos at ``size`` pixels (shorter side to size / 0.875,
        centre crop); the networks are fully convolutional up to global pooling."""
        return OfflineTowers(tuned_top=self._tuned_top, encoder=self._encoder, image_size=size)

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
        if self._tuned_top is None:
            pooled, logits = self._encoder.vision_features(batch)
            conse = self._encoder.conse(logits)
            return np.concatenate([pooled.cpu().numpy(), conse], axis=1).astype(np.float32)
        with torch.inference_mode():
            maps = run_bottom(self._encoder.vision_network, self._to_device(batch), self._stage)
        return self._features_from_maps(maps)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, self._encoder.vision_dtype, non_blocking=True)

    def _features_from_maps(self, maps: torch.Tensor) -> np.ndarray:
        net = self._encoder.vision_network
        with torch.inference_mode():
            logits = net.get_classifier()(self.original_top(maps)).float()
            top = self._tuned_top if self._tuned_top is not None else self.original_top
            pooled = top(maps).float().cpu().numpy()
        conse = self._encoder.conse(logits)
        return np.concatenate([pooled, conse], axis=1).astype(np.float32)

    def features_from_maps(self, maps: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """(n, views, C, H, W) cached bottom maps -> (n, views, image_dim) features."""
        n, views = maps.shape[:2]
        flat = maps.reshape(n * views, *maps.shape[2:])
        parts = [
            self._features_from_maps(self._to_device(torch.from_numpy(flat[i : i + batch_size])))
            for i in range(0, len(flat), batch_size)
        ]
        out = np.concatenate(parts) if parts else np.empty((0, self.image_dim), np.float32)
        return out.reshape(n, views, self.image_dim)

    def bottom_maps(
        self, images: Sequence[Image.Image], views: int, seed: int, stage: int = SPLIT_STAGE
    ) -> np.ndarray:
        """(n, views, C, H, W) float16 maps of the stages before ``stage``.

        View 0 is the evaluation transform, then ``views - 1`` augmentations
        seeded as in :meth:`augmented_image_features`.
        """
        net = self._encoder.vision_network
        batches = [self._encoder.preprocess_images(images)]
        if views > 1:
            transform = _augment_transform(imagenet.INPUT_SIZE, imagenet.MEAN, imagenet.STD)
            batches.append(_augmented_batches(images, views - 1, seed, transform))
        with torch.inference_mode():
            parts = [
                run_bottom(net, self._to_device(b), stage).half().cpu().numpy() for b in batches
            ]
        clean = parts[0][:, None]
        if views == 1:
            return clean
        augmented = parts[1].reshape(len(images), views - 1, *parts[1].shape[1:])
        return np.concatenate([clean, augmented], axis=1)

    def image_regions(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, cells, 1280) float16: the cells of the last feature map (7 x 7 = 49 at 224
        px), through the tuned top when there is one. Their mean is the pooled half of
        :meth:`image_features` (before the ConSE half is appended)."""
        top = self._tuned_top if self._tuned_top is not None else self.original_top
        net, step = self._encoder.vision_network, self._encoder.image_batch_size
        parts = []
        for i in range(0, len(images), step):
            batch = self._encoder.preprocess_images(images[i : i + step], self.image_size)
            with torch.inference_mode():
                maps = top.feature_map(run_bottom(net, self._to_device(batch), self._stage))
            parts.append(maps.flatten(2).transpose(1, 2).half().cpu().numpy())
        return np.concatenate(parts) if parts else np.empty((0, 0, 1280), np.float16)

    def image_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        step = self._encoder.image_batch_size
        parts = [
            self._features(self._encoder.preprocess_images(images[i : i + step], self.image_size))
            for i in range(0, len(images), step)
        ]
        return np.concatenate(parts) if parts else np.empty((0, self.image_dim), np.float32)

    def augmented_image_features(
        self, images: Sequence[Image.Image], views: int, seed: int
    ) -> np.ndarray:
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
        self._encoder = encoder if encoder is not None else load_base_encoder(spec, device=device)

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
