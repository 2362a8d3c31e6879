"""Prototype maths: the normalised mean, the seeded K-shot support draw, class-name texts."""

from __future__ import annotations

import itertools

import numpy as np

from models.encoders.base import l2_normalize
from models.prototype_math import class_prototypes, class_text


def test_prototype_is_the_normalised_mean_of_all_members_by_default() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((9, 6)).astype(np.float32)
    labels = ["b", "a", "b", "a", "c", "b", "a", "a", "c"]

    classes, prototypes = class_prototypes(vectors, labels)

    assert classes == ["a", "b", "c"]
    for name, prototype in zip(classes, prototypes, strict=True):
        members = vectors[[i for i, label in enumerate(labels) if label == name]]
        expected = members.mean(axis=0) / np.linalg.norm(members.mean(axis=0))
        np.testing.assert_allclose(prototype, expected, atol=1e-6)


def test_k_shot_prototype_is_the_mean_of_exactly_one_seeded_k_subset() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((6, 5)).astype(np.float32)
    labels = ["a"] * 6

    _, (prototype,) = class_prototypes(vectors, labels, k=2, seed=7)

    subset_means = [l2_normalize(vectors[list(s)].mean(axis=0, keepdims=True))[0] for s in
                    itertools.combinations(range(6), 2)]  # fmt: skip
    matching = [m for m in subset_means if np.allclose(m, prototype, atol=1e-6)]
    assert len(matching) == 1
    again = class_prototypes(vectors, labels, k=2, seed=7)[1][0]
    np.testing.assert_array_equal(again, prototype)
    others = {tuple(np.round(class_prototypes(vectors, labels, k=2, seed=s)[1][0], 5))
              for s in range(8)}  # fmt: skip
    assert len(others) > 1  # the seed decides the support


def test_k_larger_than_the_class_takes_every_member() -> None:
    vectors = np.eye(3, dtype=np.float32)
    np.testing.assert_allclose(
        class_prototypes(vectors, ["a"] * 3, k=10)[1], class_prototypes(vectors, ["a"] * 3)[1]
    )


def test_class_text_spells_out_the_name() -> None:
    assert class_text("apple_pie") == "apple pie"
    assert class_text("떡볶이", " 매콤한 떡 ") == "떡볶이: 매콤한 떡"
