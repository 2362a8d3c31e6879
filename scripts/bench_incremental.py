"""Full re-index against incremental re-index after a small change (issue #14, item 1).

Copies a dataset folder (default: the 3,750 Food-101 photos) to a temporary
folder, builds a snapshot of it from scratch, then alters ``--changed`` photos
(mirrored and saved again, so their bytes and their vectors change) and
re-indexes the same folder into the same index directory: only those photos
are encoded again, the rest are copied from the live snapshot. Both builds are
timed around :func:`index.build.build_snapshot` alone (the model is loaded once,
before either). Exit status 1 when the second build did not encode exactly the
altered items.

Usage: python scripts/bench_incremental.py --model offline [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

from index.build import build_snapshot
from index.manifest import Manifest
from models.datasets import open_dataset
from models.encoders import Encoder
from models.registry import load_encoder

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "food101-10"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="offline", help="encoder spec (MMSEARCH_MODEL)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--format", default="food101", help="dataset format of --data-dir")
    parser.add_argument("--changed", type=int, default=50, help="photos altered between builds")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def alter_photos(images: list[Path], n: int) -> list[Path]:
    """Mirror ``n`` photos spread over the list, rewriting their files."""
    step = max(1, len(images) // n)
    chosen = images[::step][:n]
    for path in chosen:
        with Image.open(path) as image:
            mirrored = ImageOps.mirror(image.convert("RGB"))
        mirrored.save(path, format="JPEG", quality=90)
    return chosen


def timed_build(
    source: Path, fmt: str, encoder: Encoder, index_dir: Path, batch: int
) -> tuple[float, Manifest]:
    dataset = open_dataset(source, fmt)
    started = time.perf_counter()
    manifest = build_snapshot(
        dataset, encoder, index_dir, batch_size=batch, total=len(dataset), keep_older=1
    )
    return time.perf_counter() - started, manifest


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    encoder = load_encoder(args.model, device=args.device)
    with tempfile.TemporaryDirectory(prefix="bench-incremental-") as tmp:
        source = Path(tmp) / "data"
        shutil.copytree(args.data_dir, source)
        index_dir = Path(tmp) / "index"
        full_s, full = timed_build(source, args.format, encoder, index_dir, args.batch_size)
        photos = sorted((source / "images").rglob("*.jpg"))
        altered = alter_photos(photos, args.changed)
        incremental_s, again = timed_build(source, args.format, encoder, index_dir, args.batch_size)
    result = {
        "model": args.model,
        "items": full.n_items,
        "altered": len(altered),
        "full_s": round(full_s, 2),
        "incremental_s": round(incremental_s, 2),
        "ratio": round(incremental_s / full_s, 4),
        "changes": again.changes,
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    expected = {"items_embedded": len(altered), "items_reused": full.n_items - len(altered)}
    return 0 if all(again.changes.get(k) == v for k, v in expected.items()) else 1


if __name__ == "__main__":
    sys.exit(main())
