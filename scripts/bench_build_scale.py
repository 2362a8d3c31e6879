"""A synthetic catalog build at large scale: time and peak memory of build_snapshot.

    .venv/bin/python scripts/bench_build_scale.py --items 1000000 --factory Flat "IVF1024,PQ48"

Each item is one text row whose vector is drawn around its class centre (1,000
classes, 384-d), by an encoder that reads the vector off the text instead of running a
network: the build's own costs (SQLite catalog, the on-disk vector spool, prototypes,
FAISS) are what is measured, not a model. Every factory builds in its own child
process, so each peak RSS (ru_maxrss) is that build's alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from index.build import build_snapshot
from models.encoders.base import l2_normalize
from models.types import CatalogRecord, Recipe

DIM = 384
SPREAD = 0.6  # noise around a class centre; classes overlap a little, as real ones do


class VectorsFromText:
    """An Encoder whose text ``"class-C item-I"`` maps to centre(C) + noise(I)."""

    def __init__(self, n_classes: int, dim: int = DIM) -> None:
        self._dim = dim
        self._centres = l2_normalize(
            np.random.default_rng(0).standard_normal((n_classes, dim)).astype(np.float32)
        )

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"vectors-from-text/{self._dim}".encode()).hexdigest()[:16]

    @property
    def device(self) -> str:
        return "cpu"

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        classes, items = zip(*(_parse(text) for text in texts), strict=True)
        noise = np.random.default_rng(items[0]).standard_normal((len(texts), self._dim))
        scale = SPREAD / np.sqrt(self._dim)
        return l2_normalize(self._centres[list(classes)] + scale * noise.astype(np.float32))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise NotImplementedError("the synthetic catalog has no photos")

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray:
        raise NotImplementedError("the synthetic catalog has no recipes")


def _parse(text: str) -> tuple[int, int]:
    """``"class-C item-I"`` -> (C, I); a class name alone (zero-shot text) -> (C, 0)."""
    parts = dict(part.split("-", 1) for part in text.split())
    return int(parts["class"]), int(parts.get("item", 0))


def synthetic_records(n_items: int, n_classes: int) -> Iterator[CatalogRecord]:
    for i in range(n_items):
        label = f"class-{i % n_classes}"
        yield CatalogRecord(
            id=f"item-{i}",
            metadata={"label": label, "n": i},
            texts=(f"{label} item-{i}",),
            label=label,
        )


class RssSampler(threading.Thread):
    """Peak anonymous and file-backed RSS, sampled from /proc: pages of a memory-mapped
    file count in ru_maxrss but are page cache the kernel can drop, anonymous ones not."""

    def __init__(self, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.every_s = every_s
        self.peak_kib = {"RssAnon": 0, "RssFile": 0}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            for line in Path("/proc/self/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in self.peak_kib:
                    self.peak_kib[name] = max(self.peak_kib[name], int(value.split()[0]))


def build_once(n_items: int, n_classes: int, factory: str, index_dir: Path) -> dict[str, object]:
    sampler = RssSampler()
    sampler.start()
    started = time.perf_counter()
    manifest = build_snapshot(
        synthetic_records(n_items, n_classes),
        VectorsFromText(n_classes),
        index_dir,
        factory=factory,
        batch_size=1024,
        total=n_items,
    )
    seconds = time.perf_counter() - started
    sampler.stopped.set()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    on_disk = sum(f.stat().st_size for f in (index_dir / manifest.version).iterdir())
    return {
        "items": manifest.n_items,
        "vectors": manifest.n_vectors,
        "factory": factory,
        "build_s": round(seconds, 1),
        "peak_rss_mib": round(peak_kib / 1024),
        "peak_rss_anon_mib": round(sampler.peak_kib["RssAnon"] / 1024),
        "peak_rss_file_mib": round(sampler.peak_kib["RssFile"] / 1024),
        "vectors_mib": round(manifest.n_vectors * DIM * 4 / 2**20),
        "snapshot_on_disk_mib": round(on_disk / 2**20),
    }


def run_child(args: argparse.Namespace, factory: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        command = [
            sys.executable,
            __file__,
            "--child",
            "--items",
            str(args.items),
            "--classes",
            str(args.classes),
            "--factory",
            factory,
            "--workdir",
            tmp,
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--factory", nargs="+", default=["Flat", "IVF1024,PQ48"])
    parser.add_argument("--workdir", type=Path, default=None, help="where snapshots are built")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.child:
        result = build_once(args.items, args.classes, args.factory[0], args.workdir / "index")
        print(json.dumps(result))
        return
    results = [run_child(args, factory) for factory in args.factory]
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
