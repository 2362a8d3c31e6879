"""Tiny trained bundles for tests: a random open_clip base saved as a checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from models.encoders.openclip import OpenClipEncoder
from models.types import Recipe

TINY_ARCH = "mmsearch-tiny-vit"


def save_tiny_base(directory: Path, seed: int = 0) -> str:
    """Save a seeded tiny open_clip model; returns the base spec that reloads it identically."""
    torch.manual_seed(seed)
    encoder = OpenClipEncoder(TINY_ARCH, None, device="cpu")
    path = directory / "tiny.pt"
    torch.save(encoder.model.state_dict(), path)
    return f"openclip:{TINY_ARCH}:{path}"


def train_args(base: str, out: Path, *extra: str) -> list[str]:
    """``mmsearch train`` on generated data: 32-d space, a few seconds on a CPU."""
    return [
        "train", "--dataset", "synthetic", "--out", str(out), "--base", base,
        "--epochs", "25", "--batch-size", "64", "--dim", "32", "--views", "2", *extra,
    ]  # fmt: skip


def sample_inputs() -> tuple[list[Image.Image], list[str], list[Recipe]]:
    """A few images, texts and recipes (Korean included) to compare bundle vectors on."""
    images = [Image.new("RGB", (40, 30), c) for c in ("red", "green", "navy")]
    texts = ["spicy pork stew", "김치찌개"]
    recipes = [
        Recipe("김치찌개", ("김치", "돼지고기"), ("끓인다.", "먹는다.")),
        Recipe("toast", (), ()),  # empty sequences are allowed
    ]
    return images, texts, recipes
