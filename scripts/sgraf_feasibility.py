"""Can SGRAF be trained on this machine? Cache the flickr8k val local features and time
training steps on them; prints the measured costs and the projected cost of training.

    .venv/bin/python scripts/sgraf_feasibility.py --batch 32 --steps 5

1. Local features of the flickr8k validation split (the split food-v1 holds out:
   20 %, hash of the id, seed 0) through food-v1's towers: 49 region cells per
   photo, word n-gram vectors per caption (:mod:`training.local_features`), into
   a fresh cache folder, so the time is the cold one.
2. Training steps as SGRAF trains: a batch of B (caption, photo) pairs, every
   caption scored against every photo of the batch (B x B SGRAF passes over 49
   regions), a VSE++ hardest-negative triplet loss, backward, Adam. A linear
   layer maps the 1280-d regions and one the 384-d n-grams into a 384-d space.

Nothing is trained to convergence: this measures cost, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.bundle import load_bundle
from models.datasets import open_dataset, split_records
from models.registry import shipped_model_dir
from models.sgraf import Sgraf, SgrafConfig
from models.towers import OfflineTowers
from training.local_features import LocalFeatureSet, local_features

DIM = 384


class SgrafTrainer(nn.Module):
    """Projections of the cached features into one space, then SGRAF."""

    def __init__(self, region_dim: int, text_dim: int, config: SgrafConfig):
        super().__init__()
        self.regions = nn.Linear(region_dim, config.dim)
        self.grams = nn.Linear(text_dim, config.dim)
        self.sgraf = Sgraf(config)

    def scores(self, grams: list[torch.Tensor], regions: torch.Tensor) -> torch.Tensor:
        """(captions, photos) scores: each caption against every photo of the batch."""
        photos = self.regions(regions)  # (B, cells, dim)
        wholes = photos.mean(dim=1)
        rows = []
        for caption in grams:
            parts = self.grams(caption)
            rows.append(self.sgraf(parts, parts.mean(dim=0), photos, None, wholes))
        return torch.stack(rows)


def hardest_negative_triplet(scores: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """VSE++: the hardest negative of each caption and of each photo; positives on the diagonal."""
    positive = scores.diagonal()
    off = scores.masked_fill(torch.eye(len(scores), dtype=torch.bool), float("-inf"))
    caption_loss = F.relu(margin + off.amax(dim=1) - positive)
    photo_loss = F.relu(margin + off.amax(dim=0) - positive)
    return (caption_loss + photo_loss).mean()


def time_steps(
    features: LocalFeatureSet, batch: int, steps: int, config: SgrafConfig, seed: int = 0
) -> list[float]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SgrafTrainer(features.regions.shape[-1], features.grams.values.shape[-1], config)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    times = []
    for _ in range(steps + 1):  # the first step warms up and is not counted
        # One caption per photo, so each photo's only positive is on the diagonal.
        photos = rng.choice(len(features.ids), size=batch, replace=False)
        captions = [int(rng.choice(np.flatnonzero(features.caption_owner == p))) for p in photos]
        grams = [torch.from_numpy(features.grams.row(c).astype(np.float32)) for c in captions]
        regions = torch.from_numpy(features.regions[photos].astype(np.float32))
        started = time.perf_counter()
        loss = hardest_negative_triplet(model.scores(grams, regions))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/flickr8k"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20, help="for the projection only")
    args = parser.parse_args()
    towers = load_bundle(shipped_model_dir("food-v1"), "cpu").towers
    assert isinstance(towers, OfflineTowers)
    records = list(open_dataset(args.data, "flickr"))
    train, val = split_records(records, 0.2, seed=0)
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        features = local_features(towers, val, Path(cache))
        cache_s = time.perf_counter() - started
        cache_bytes = sum(p.stat().st_size for p in Path(cache).rglob("*.npz"))
    config = SgrafConfig(dim=DIM)
    step_s = statistics.median(time_steps(features, args.batch, args.steps, config))
    n_captions = len(features.caption_owner)
    train_captions = sum(len(r.texts) for r in train)
    # Each epoch visits every training caption once, B per step.
    epoch_s = train_captions / args.batch * step_s
    figures = {
        "val_photos": len(features.ids),
        "val_captions": n_captions,
        "n_grams": int(len(features.grams.values)),
        "cache_s": round(cache_s, 1),
        "cache_ms_per_photo_with_captions": round(1000 * cache_s / len(features.ids), 1),
        "cache_mb": round(cache_bytes / 2**20, 1),
        "batch": args.batch,
        "step_s_p50": round(step_s, 3),
        "train_photos": len(train),
        "train_captions": train_captions,
        "projected_epoch_min": round(epoch_s / 60, 1),
        "projected_min_for_epochs": round(args.epochs * epoch_s / 60, 1),
        "epochs": args.epochs,
        "projected_train_cache_min": round(cache_s * len(train) / len(features.ids) / 60, 1),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
