"""Embed food101's val and support photos and class names once, for prototype experiments.

Writes an .npz with ``val`` / ``support`` image vectors (with ``--flip`` also
their mirror images), their labels, and the class-name vectors, so prototype
variants can be compared in numpy without re-running the towers.

Usage: python scripts/dump_food101_vectors.py --bundle var/bundles/X --out var/vec/X.npz [--seed S]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import ImageOps

from models.datasets import open_dataset, split_records
from models.encoders.base import Encoder, l2_normalize
from models.images import load_image
from models.prototype_math import class_text
from models.registry import load_encoder
from models.types import CatalogRecord


def embed(encoder: Encoder, records: Sequence[CatalogRecord], flip: bool) -> np.ndarray:
    out = []
    for start in range(0, len(records), 32):
        images = [load_image(r.image_path) for r in records[start : start + 32] if r.image_path]
        if flip:
            images = [ImageOps.mirror(image) for image in images]
        out.append(l2_normalize(encoder.encode_images(images)))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/food101-10"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--flip", action="store_true", help="also embed the mirror images")
    parser.add_argument("--seed", type=int, default=0, help="the split seed, as in training")
    args = parser.parse_args()
    encoder = load_encoder(f"bundle:{args.bundle}", device="cpu")
    records = [r for r in open_dataset(args.data_dir, "food101") if r.label and r.image_path]
    support, val = split_records(records, 0.2, args.seed)
    classes = sorted({str(r.label) for r in records})
    arrays = {
        "classes": np.array(classes),
        "names": l2_normalize(encoder.encode_texts([class_text(c) for c in classes])),
        "val_labels": np.array([str(r.label) for r in val]),
        "support_labels": np.array([str(r.label) for r in support]),
    }
    for part, rows in (("val", val), ("support", support)):
        arrays[part] = embed(encoder, rows, flip=False)
        if args.flip:
            arrays[f"{part}_flip"] = embed(encoder, rows, flip=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)


if __name__ == "__main__":
    main()
