"""open_clip backend on the shipped tiny architecture: no downloads, ever."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.encoders import Encoder
from models.encoders.openclip import CONFIG_DIR, OpenClipEncoder
from models.types import Recipe

ARCH = "mmsearch-tiny-vit"

# First values of the embeddings of GOLDEN_IMAGE / GOLDEN_TEXT by the tiny model
# built right after torch.manual_seed(0) (computed once, torch 2.14.1,
# open_clip 3.3.0). A change means random init, preprocessing, tokenisation or
# pooling changed silently.
GOLDEN_IMAGE_VALUES = [-0.0022380, 0.0211459, 0.1653142, 0.1719409, -0.0194559, -0.0948910]
GOLDEN_TEXT = "a bowl of kimchi stew"
GOLDEN_TEXT_VALUES = [0.1501099, 0.3194420, 0.0100310, -0.1956106, -0.0165727, 0.0894498]


def golden_image() -> Image.Image:
    return Image.fromarray((np.arange(40 * 48 * 3).reshape(40, 48, 3) % 251).astype(np.uint8))


@pytest.fixture(scope="module")
def tiny() -> OpenClipEncoder:
    torch.manual_seed(0)
    return OpenClipEncoder(ARCH, None, device="cpu")


def test_config_is_shipped() -> None:
    assert (CONFIG_DIR / f"{ARCH}.json").is_file()


def test_protocol_shapes_norms(tiny: OpenClipEncoder) -> None:
    assert isinstance(tiny, Encoder)
    assert tiny.dim == 64 and tiny.device == "cpu"
    assert re.fullmatch(r"openclip-[0-9a-f]{16}", tiny.fingerprint)
    images = tiny.encode_images([golden_image(), Image.new("L", (10, 90))])
    texts = tiny.encode_texts(["hello", "김치찌개", "x " * 200])  # long text is truncated to 77
    recipes = tiny.encode_recipes([Recipe("t", ("a", "b"), ("c",))])
    for arr, n in ((images, 2), (texts, 3), (recipes, 1)):
        assert arr.shape == (n, 64) and arr.dtype == np.float32
        assert np.allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    assert tiny.encode_images([]).shape == (0, 64)
    assert tiny.encode_texts([]).shape == (0, 64)
    np.testing.assert_array_equal(
        recipes, tiny.encode_texts([Recipe("t", ("a", "b"), ("c",)).as_text()])
    )


def test_golden_outputs(tiny: OpenClipEncoder) -> None:
    image = tiny.encode_images([golden_image()])[0]
    text = tiny.encode_texts([GOLDEN_TEXT])[0]
    np.testing.assert_allclose(image[:6], GOLDEN_IMAGE_VALUES, atol=1e-4)
    np.testing.assert_allclose(text[:6], GOLDEN_TEXT_VALUES, atol=1e-4)


def test_checkpoint_round_trip(tiny: OpenClipEncoder, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), checkpoint)
    loaded = OpenClipEncoder(ARCH, str(checkpoint), device="cpu")
    images = [golden_image(), Image.new("RGB", (33, 77), "red")]
    texts = ["a dog", "비빔밥"]
    np.testing.assert_array_equal(loaded.encode_images(images), tiny.encode_images(images))
    np.testing.assert_array_equal(loaded.encode_texts(texts), tiny.encode_texts(texts))
    # same weights -> same fingerprint, wherever the file lives
    assert loaded.fingerprint == tiny.fingerprint
    torch.manual_seed(1)
    other = OpenClipEncoder(ARCH, None, device="cpu")
    assert other.fingerprint != tiny.fingerprint


def test_bad_sources() -> None:
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        OpenClipEncoder("no-such-arch", None, device="cpu")
    with pytest.raises(FileNotFoundError):
        OpenClipEncoder(ARCH, "/nonexistent/dir/model.pt", device="cpu")
    with pytest.raises(ValueError, match="precision"):
        OpenClipEncoder(ARCH, None, device="cpu", precision="fp16")
