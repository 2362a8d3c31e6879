"""Is a bundle's set gain on flickr's report half more than noise? A paired bootstrap.

    .venv/bin/python scripts/set_gain_bootstrap.py --model var/bundles/food-v1-sets \
        --flickr-dir ../shared/data/flickr8k --cache-dir var/cache

The report half is the one ``mmsearch train-set`` and ``eval --split val-report`` report
on. Photos are resampled with replacement (each with its captions) and RSUM(set) -
RSUM(single) recomputed against the whole half as gallery; prints the full-sample
difference, its 95 % interval and the share of resamples where set did not gain.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from models.bundle import load_bundle
from models.datasets import open_dataset
from models.set_similarity import DEFAULT_ALPHA
from training.evaluate import ranks_of_positives
from training.train_set import dataset_parts, set_similarity
from training.train_sgraf import RerankData


def rsum(ranks: tuple[np.ndarray, np.ndarray], captions: np.ndarray, photos: np.ndarray) -> float:
    t2i, i2t = ranks
    return 100 * sum(
        float(np.mean(t2i[captions] <= k) + np.mean(i2t[photos] <= k)) for k in (1, 5, 10)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a bundle with set heads")
    parser.add_argument("--flickr-dir", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    bundle = load_bundle(args.model, device="cpu")
    if bundle.sets is None:
        raise SystemExit(f"{args.model} carries no set heads")
    data = RerankData(
        flickr=list(open_dataset(args.flickr_dir, "flickr")),
        cache_dir=args.cache_dir,
        flickr_from="val-half",
    )
    report = dataset_parts(bundle, data, tune_fraction=0.3)[2].flickr
    positive = report.owner[:, None] == np.arange(len(report.images))[None, :]
    ranks = {
        name: (ranks_of_positives(s, positive), ranks_of_positives(s.T, positive.T))
        for name, s in (
            ("single", report.texts @ report.images.T),
            ("set", set_similarity(bundle.sets.heads, report, DEFAULT_ALPHA)),
        )
    }
    n = len(report.images)
    captions_of = [np.flatnonzero(report.owner == j) for j in range(n)]
    everything = np.arange(len(report.owner)), np.arange(n)
    full = {name: rsum(r, *everything) for name, r in ranks.items()}
    rng = np.random.default_rng(args.seed)
    diffs = []
    for _ in range(args.resamples):
        photos = rng.integers(0, n, n)
        captions = np.concatenate([captions_of[j] for j in photos])
        diffs.append(rsum(ranks["set"], captions, photos) - rsum(ranks["single"], captions, photos))
    low, high = np.percentile(diffs, [2.5, 97.5])
    print(
        json.dumps(
            {
                "photos": n,
                "rsum": full,
                "gain": full["set"] - full["single"],
                "ci95": [float(low), float(high)],
                "share_not_gaining": float(np.mean(np.asarray(diffs) <= 0)),
            }
        )
    )


if __name__ == "__main__":
    main()
