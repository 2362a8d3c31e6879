"""Extreme aspect ratios: the encoders' resize must stay small (issue #18, item 1).

A 65535x1 image used to be resized to 16.7 M x 256 pixels before its 224x224 centre
crop. Both preprocessing paths now crop the discarded ends first; these tests record
the size every resize is asked for instead of letting a regression allocate gigabytes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from models.encoders import imagenet
from models.encoders.openclip import OpenClipEncoder
from models.images import MAX_ASPECT_RATIO

LARGEST_RESIZE_PIXELS = int(MAX_ASPECT_RATIO * 731 * 731)  # 640 px input: 731 short side


@pytest.fixture()
def resize_sizes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """Every (width, height) that PIL is asked to resize to during the test."""
    sizes: list[tuple[int, int]] = []
    real_resize = Image.Image.resize

    def recording_resize(self: Image.Image, size, *args, **kwargs):  # type: ignore[no-untyped-def]
        sizes.append(tuple(size))
        return real_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording_resize)
    yield sizes


@pytest.mark.parametrize("size", [(65535, 1), (8000, 1), (1, 8000), (30000, 7)])
def test_imagenet_preprocess_bounds_the_resize(
    size: tuple[int, int], resize_sizes: list[tuple[int, int]]
) -> None:
    x = imagenet.preprocess(Image.new("RGB", size, (10, 200, 30)))

    assert x.shape == (3, 224, 224)
    assert resize_sizes and all(w * h <= LARGEST_RESIZE_PIXELS for w, h in resize_sizes)


def _gradient(width: int, height: int) -> Image.Image:
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to((xs + ys) / 2, (height, width, 3)).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels))


def _uncropped_preprocess(image: Image.Image, size: int = imagenet.INPUT_SIZE) -> torch.Tensor:
    """The transform before the fix: the whole image resized, then centre-cropped."""
    width, height = image.size
    scale = int(round(size / imagenet.CROP_PCT))
    new_w = max(1, int(round(width * scale / height))) if width > height else scale
    new_h = max(1, int(round(height * scale / width))) if height >= width else scale
    resized = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    pixels = np.asarray(resized.crop((left, top, left + size, top + size)), np.float32) / 255
    return torch.from_numpy(((pixels - 0.5) / 0.5).transpose(2, 0, 1).copy())


@pytest.mark.parametrize("size", [(1000, 100), (120, 960), (640, 480)])
def test_cropping_first_keeps_the_pixels_the_encoder_sees(size: tuple[int, int]) -> None:
    image = _gradient(*size)

    assert torch.allclose(imagenet.preprocess(image), _uncropped_preprocess(image), atol=0.02)


def test_openclip_preprocess_bounds_the_resize(resize_sizes: list[tuple[int, int]]) -> None:
    torch.manual_seed(0)
    tiny = OpenClipEncoder("mmsearch-tiny-vit", None, device="cpu")
    resize_sizes.clear()  # whatever model construction resized

    vectors = tiny.encode_images([Image.new("RGB", (65535, 1)), Image.new("RGB", (1, 20000))])

    assert vectors.shape == (2, tiny.dim) and np.isfinite(vectors).all()
    assert all(w * h <= LARGEST_RESIZE_PIXELS for w, h in resize_sizes)
