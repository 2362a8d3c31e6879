"""Class prototypes (Snell et al., 2017), as the index and the evaluation both build them.

A class's prototype is the L2-normalised mean of K support vectors drawn with a
seed (all members when K is None). A zero-shot prototype is the embedded class
name: ``"apple_pie"`` becomes the text ``"apple pie"`` (plus an optional
description). Vectors are rows of the joint space, so cosine = inner product.

The support draw is a seeded permutation per class (seeded by the seed and the
class name, not by the class's position), so adding a class never changes
another class's draw, and the index's prototype tables
(:mod:`index.prototypes`) draw the same members as :func:`class_prototypes` does.
Measuring them is :mod:`training.prototype_eval`'s job.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from models.encoders.base import l2_normalize


def class_text(name: str, description: str | None = None) -> str:
    """What a class name says as text: ``"apple_pie"`` -> ``"apple pie"``."""
    text = " ".join(name.replace("_", " ").split())
    if description and description.strip():
        text = f"{text}: {description.strip()}"
    return text


def support_order(n_members: int, seed: int, class_name: str) -> np.ndarray:
    """The seeded order in which a class's members are drawn; support = the first K."""
    rng = np.random.default_rng([seed, zlib.crc32(class_name.encode("utf-8"))])
    return rng.permutation(n_members)


def support_indices(n_members: int, k: int | None, seed: int, class_name: str) -> np.ndarray:
    """Sorted member positions of a class's K-shot support (all of them when K is None)."""
    if k is not None and k < 1:
        raise ValueError(f"the number of support vectors K must be positive, got {k}")
    if k is None or k >= n_members:
        return np.arange(n_members)
    return np.sort(support_order(n_members, seed, class_name)[:k])


def class_prototypes(
    vectors: np.ndarray, labels: Sequence[str], k: int | None = None, seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """(sorted class names, (C, dim) prototypes): normalised mean of each class's K support.

    ``labels[i]`` is the class of ``vectors[i]``; K None (default) means all members.
    """
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(labels):
        raise ValueError(f"expected one label per vector row, got {len(labels)} for {matrix.shape}")
    label_array = np.asarray(labels, dtype=object)
    classes = sorted(set(label_array.tolist()))
    prototypes = np.zeros((len(classes), matrix.shape[1]), dtype=np.float32)
    for c, name in enumerate(classes):
        members = np.flatnonzero(label_array == name)
        support = members[support_indices(members.size, k, seed, name)]
        prototypes[c] = matrix[support].mean(axis=0)
    return classes, l2_normalize(prototypes)


def check_text_weight(text_weight: float) -> float:
    if not 0.0 <= text_weight <= 1.0:
        raise ValueError(f"the text weight must be in [0, 1], got {text_weight}")
    return text_weight


def mix_with_text(shot: np.ndarray, text: np.ndarray, text_weight: float) -> np.ndarray:
    """normalise((1 - w) * shot + w * text): a class described by examples and by its name."""
    check_text_weight(text_weight)
    return l2_normalize((1.0 - text_weight) * shot + text_weight * text)
