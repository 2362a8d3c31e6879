"""A tiny flickr-format dataset of one-colour photos, for the set and re-ranker tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image


def write_colour_flickr(root: Path, colours: Sequence[str]) -> Path:
    """One photo per colour with two captions each ("a red square", "all red"), in the
    flickr layout (``images/`` and ``captions.tsv``) under ``root``."""
    (root / "images").mkdir()
    lines = ["image\tcaption"]
    for colour in colours:
        Image.new("RGB", (48, 40), colour).save(root / "images" / f"{colour}.jpg")
        lines += [f"images/{colour}.jpg\ta {colour} square", f"images/{colour}.jpg\tall {colour}"]
    (root / "captions.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
