"""Item vs hybrid ranking on the validation split, with prototypes from the training split.

``python -m training.ranking_eval`` indexes a folder and builds the prototypes
from that same folder, so a query's own photo is one of its class's support
vectors; with kfood's small cuisines (일식 has 20 recipes) that leaks the answer
and inflates hybrid's figures. This script avoids it: it uses a bundle's joint
model on the cached tower features, takes the queries and candidates from the
validation split (``--val-fraction``, ``--seed``, as in training) and the class
prototypes from the training split's photos only.

    hybrid score = (1 - a) * sim(q, item) + a * sim(q, proto(class(item)))

kfood: photo -> recipe Recall@K. food101: photo -> other photos, class
precision@1 / @10.

Usage: python scripts/hybrid_ranking.py --bundle var/bundles/food --data-dir ../shared/data \
    [--datasets kfood,food101]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from models.bundle import load_bundle
from models.datasets import open_dataset, split_records
from models.encoders.offline import default_cache_dir
from models.joint import JointModel
from models.towers import Towers
from training.evaluate import ranks_of_positives, recall_summary
from training.features import extract_features
from training.train import embed_feature_set

WEIGHTS = (0.0, 0.1, 0.3, 0.5)


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure(
    args: argparse.Namespace, model: JointModel, towers: Towers, fmt: str, folder: str
) -> dict[str, dict[str, float]]:
    records = list(open_dataset(args.data_dir / folder, fmt))
    features = extract_features(towers, records, views=1, cache_dir=args.cache_dir)
    _, val = split_records(records, args.val_fraction, seed=args.seed)
    val_ids = {r.id for r in val}
    train_idx = [i for i, x in enumerate(features.ids) if x not in val_ids]
    val_idx = [i for i, x in enumerate(features.ids) if x in val_ids]
    train, held = (
        embed_feature_set(model, features.take(train_idx)),
        embed_feature_set(model, features.take(val_idx)),
    )
    classes = sorted({str(x) for x in features.labels})
    y_train = np.array([classes.index(str(features.labels[i])) for i in train_idx])
    y_val = np.array([classes.index(str(features.labels[i])) for i in val_idx])
    prototypes = normalise(
        np.stack([train["image"][y_train == c].mean(0) for c in range(len(classes))])
    )
    queries = held["image"]
    class_sim = (queries @ prototypes.T)[:, y_val]
    results = {}
    for a in WEIGHTS:
        if fmt == "kfood":
            scores = (1 - a) * (queries @ held["recipe"].T) + a * class_sim
            positive = np.eye(len(val_idx), dtype=bool)
            results[f"a={a}"] = recall_summary(ranks_of_positives(scores, positive))
        else:
            scores = (1 - a) * (queries @ queries.T) + a * class_sim
            np.fill_diagonal(scores, -np.inf)
            top = np.argsort(-scores, axis=1)[:, :10]
            results[f"a={a}"] = {
                "class_precision@1": float((y_val[top[:, 0]] == y_val).mean()),
                "class_precision@10": float((y_val[top] == y_val[:, None]).mean()),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", default="kfood,food101", help="kfood and/or food101")
    args = parser.parse_args()
    # The bundle's own towers: a tuned top and an image size change the photo features.
    encoder = load_bundle(args.bundle, device="cpu")
    folders = {"kfood": "kfood", "food101": "food101-10"}
    out = {
        name: measure(args, encoder.model, encoder.towers, name, folders[name])
        for name in args.datasets.split(",")
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
