"""Nearest-prototype figures of bundles and of their ensemble, from dumped vectors.

Reads .npz files written by dump_food101_vectors.py for bundles of one split (same
``--seed``), scores each bundle alone and their ensemble (vectors side by side,
scaled by 1/sqrt(m): models.ensemble.join_vectors) with the evaluation's own
functions (training.prototype_eval), photo prototypes at K = 1, 5, 20, all and mixed with
the class names at several weights. Prints JSON.

Usage: python scripts/ensemble_food101.py var/vec/A.npz var/vec/B.npz [...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from models.ensemble import join_vectors
from models.prototype_math import class_prototypes
from training.prototype_eval import NameMix, k_shot_accuracy

SHOTS = (1, 5, 20, None)
NAME_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def scores(data: dict[str, Any]) -> dict[str, Any]:
    support = (data["support"], list(data["support_labels"]))
    val, labels = data["val"], list(data["val_labels"])
    names = dict(zip(data["classes"], data["names"], strict=True))
    out: dict[str, Any] = {
        "zero_shot": round(float(((val @ data["names"].T).argmax(1) == _truth(data)).mean()), 4)
    }
    for k in SHOTS:
        out[str(k or "all")] = round(k_shot_accuracy(val, labels, k, support=support)["top1"], 4)
    for w in NAME_WEIGHTS[1:-1]:
        mix = NameMix(names, w)
        out[f"all+names w={w}"] = round(
            k_shot_accuracy(val, labels, None, support=support, mix=mix)["top1"], 4
        )
    return out


def _truth(data: dict[str, Any]) -> np.ndarray:
    index = {c: i for i, c in enumerate(data["classes"])}
    return np.array([index[c] for c in data["val_labels"]])


def main() -> None:
    files = [Path(p) for p in sys.argv[1:]]
    loaded = [dict(np.load(f)) for f in files]
    for other in loaded[1:]:
        if list(other["val_labels"]) != list(loaded[0]["val_labels"]):
            raise SystemExit("the files are not of one split (their val photos differ)")
    report = {f.stem: scores(d) for f, d in zip(files, loaded, strict=True)}
    ensemble = {key: loaded[0][key] for key in ("classes", "val_labels", "support_labels")}
    for key in ("val", "support", "names"):
        ensemble[key] = join_vectors([d[key] for d in loaded])
    report["ensemble"] = scores(ensemble)
    hits = [_all_support_hits(d) for d in loaded]
    report["overlap"] = {
        "all_right": round(float(np.mean(np.all(hits, axis=0))), 4),
        "any_right": round(float(np.mean(np.any(hits, axis=0))), 4),
    }
    print(json.dumps(report, indent=1))


def _all_support_hits(data: dict[str, Any]) -> np.ndarray:
    """Which val photos the all-support prototypes classify right."""
    classes, protos = class_prototypes(data["support"], list(data["support_labels"]))
    truth = np.array([classes.index(c) for c in data["val_labels"]])
    return np.asarray((data["val"] @ protos.T).argmax(1) == truth)


if __name__ == "__main__":
    main()
