"""Compare prototype variants on vectors written by dump_food101_vectors.py.

Choices are made by 5-fold cross-validation inside the support (training)
split; the val split is only scored. Prints JSON.

Usage: python scripts/prototype_variants.py var/vec/X.npz
"""

from __future__ import annotations

import json
import sys

import numpy as np

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def norm(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def prototypes(
    vectors: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    names: np.ndarray,
    w: float,
    centre: np.ndarray | None,
) -> np.ndarray:
    means = np.stack([norm(vectors[labels == c].mean(0)) for c in range(n_classes)])
    mixed = norm((1 - w) * means + w * names)
    return norm(mixed - centre) if centre is not None else mixed


def accuracy(
    queries: np.ndarray, truth: np.ndarray, protos: np.ndarray, centre: np.ndarray | None
) -> float:
    q = norm(queries - centre) if centre is not None else queries
    return float(((q @ protos.T).argmax(1) == truth).mean())


def cross_validated(
    support: np.ndarray,
    truth: np.ndarray,
    n_classes: int,
    names: np.ndarray,
    w: float,
    centred: bool,
) -> float:
    folds = np.arange(len(truth)) % 5
    scores = []
    for f in range(5):
        fit, held = folds != f, folds == f
        centre = support[fit].mean(0) if centred else None
        protos = prototypes(support[fit], truth[fit], n_classes, names, w, centre)
        scores.append(accuracy(support[held], truth[held], protos, centre))
    return float(np.mean(scores))


def main() -> None:
    data = np.load(sys.argv[1])
    classes = list(data["classes"])
    index = {c: i for i, c in enumerate(classes)}
    s_truth = np.array([index[c] for c in data["support_labels"]])
    v_truth = np.array([index[c] for c in data["val_labels"]])
    names = data["names"]
    report = {}
    for tta in ("none", "flip") if "support_flip" in data else ("none",):
        support = data["support"] if tta == "none" else norm(data["support"] + data["support_flip"])
        val = data["val"] if tta == "none" else norm(data["val"] + data["val_flip"])
        for centred in (False, True):
            centre = support.mean(0) if centred else None
            for w in WEIGHTS:
                protos = prototypes(support, s_truth, len(classes), names, w, centre)
                key = f"tta={tta} centred={centred} w={w}"
                report[key] = {
                    "cv_support": round(
                        cross_validated(support, s_truth, len(classes), names, w, centred), 4
                    ),
                    "val": round(accuracy(val, v_truth, protos, centre), 4),
                }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
