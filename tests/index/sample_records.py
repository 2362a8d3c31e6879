"""Synthetic catalog records with real image files, for index tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from models.types import CatalogRecord, Recipe

CUISINES = ("한식", "양식", "중식")
DISHES = ("kimchi stew", "bibimbap", "pasta", "pizza", "mapo tofu", "dumplings", "salad")


def write_image(path: Path, seed: int) -> Path:
    """A 24x24 RGB photo stand-in: two random colour blocks."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((24, 24, 3), np.uint8)
    pixels[:12] = rng.integers(0, 256, 3)
    pixels[12:] = rng.integers(0, 256, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_records(image_dir: Path, n: int, prefix: str = "item") -> list[CatalogRecord]:
    """Items with an image, two captions and a recipe: four rows each."""
    records = []
    for i in range(n):
        dish = DISHES[i % len(DISHES)]
        records.append(
            CatalogRecord(
                id=f"{prefix}-{i}",
                metadata={"cuisine": CUISINES[i % 3], "minutes": 10 * (i % 7), "n": i},
                image_path=write_image(image_dir / f"{prefix}-{i}.png", seed=i),
                texts=(f"{dish} number {i}", f"a photo of {dish} served hot, variant {i}"),
                recipe=Recipe(title=f"{dish} {i}", ingredients=("salt", dish), instructions=()),
                label=dish,
            )
        )
    return records


def jeon_record(folder: Path) -> CatalogRecord:
    """An item the sample catalog lacks ("new-1", a zucchini pancake with its photo in
    ``folder``): what the item-change tests add."""
    return CatalogRecord(
        id="new-1",
        image_path=write_image(folder / "jeon.png", seed=999),
        texts=("zucchini pancake, crispy and golden",),
        label="jeon",
        metadata={"cuisine": "한식"},
    )
