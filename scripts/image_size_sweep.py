"""Val photos embedded at other input sizes, scored against the 224 px all-support prototypes.

Reads the vectors written by dump_food101_vectors.py (support and class names at
224) and re-embeds only the val photos at each size, so one size costs one pass
over 747 photos. Prints nearest-prototype and nearest-name top-1 per size.

Usage: python scripts/image_size_sweep.py --bundle var/bundles/X --vectors var/vec/X.npz \
    --sizes 224,256,288
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models.bundle import load_bundle
from models.datasets import open_dataset, split_records
from models.encoders.base import l2_normalize
from models.images import load_image
from models.towers import OfflineTowers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--vectors", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/food101-10"))
    parser.add_argument("--sizes", default="224,256,288")
    args = parser.parse_args()
    data = np.load(args.vectors)
    index = {name: i for i, name in enumerate(data["classes"])}
    support_truth = np.array([index[c] for c in data["support_labels"]])
    val_truth = np.array([index[c] for c in data["val_labels"]])
    prototypes = l2_normalize(
        np.stack([data["support"][support_truth == c].mean(0) for c in range(len(index))])
    )
    records = [r for r in open_dataset(args.data_dir, "food101") if r.label and r.image_path]
    _, val = split_records(records, 0.2, 0)
    images = [load_image(r.image_path) for r in val if r.image_path]
    encoder = load_bundle(args.bundle)
    towers = encoder.towers
    if not isinstance(towers, OfflineTowers):
        raise SystemExit("the image size applies to bundles on the offline base")
    for size in (int(s) for s in args.sizes.split(",")):
        encoder.towers = towers.with_image_size(size)
        vectors = np.concatenate(
            [encoder.encode_images(images[i : i + 32]) for i in range(0, len(images), 32)]
        )
        photos = float(((vectors @ prototypes.T).argmax(1) == val_truth).mean())
        names = float(((vectors @ data["names"].T).argmax(1) == val_truth).mean())
        print(f"{size} px: all-support top-1 {photos:.4f}  class-name top-1 {names:.4f}")


if __name__ == "__main__":
    main()
