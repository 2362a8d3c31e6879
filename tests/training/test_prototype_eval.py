"""Prototype evaluation: leave-one-out, K-shot against a brute-force oracle,
zero-shot from class names, and the food101 evaluation end to end."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.datasets import Food101Dataset
from models.encoders.base import l2_normalize
from models.prototype_math import support_order
from models.types import Recipe
from training.evaluate import evaluate_records
from training.prototype_eval import (
    NameMix,
    evaluate_prototypes,
    k_shot_accuracy,
    prototype_top1,
    topk_accuracy,
)

COLOURS = {"red": 0, "green": 1, "blue": 2}


class ColourEncoder:
    """Images and texts share one 4-d space: the RGB means of an image, and for a text
    the colour words it contains. So a class named ``red_apple`` is found zero-shot."""

    def __init__(self) -> None:
        self.texts_seen: list[str] = []

    dim = 4
    fingerprint = "colour"
    device = "cpu"

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        means = [np.asarray(img, np.float32).reshape(-1, 3).mean(axis=0) for img in images]
        return l2_normalize(np.array([[*m, 10.0] for m in means], np.float32))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.texts_seen += texts
        rows = np.full((len(texts), 4), 0.05, np.float32)
        for row, text in enumerate(texts):
            for word, axis in COLOURS.items():
                rows[row, axis] += float(word in text.split())
        return l2_normalize(rows)

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray:
        return self.encode_texts([r.as_text() for r in recipes])


def write_food101(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """A food101-format folder whose class ``<colour>_<dish>`` photos lean to that colour."""
    rng = np.random.default_rng(seed)
    lines = ["image\tlabel"]
    for name, count in per_class.items():
        axis = COLOURS[name.split("_")[0]]
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 120, (8, 8, 3)).astype(np.uint8)
            pixels[..., axis] = rng.integers(160, 256, (8, 8))
            Image.fromarray(pixels).save(root / "images" / name / f"{i}.png")
            lines.append(f"images/{name}/{i}.png\t{name}")
    (root / "labels.tsv").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(per_class) + "\n")
    return root


# --------------------------------------------------------------------------- classification


def test_prototype_top1_leaves_each_vector_out_of_its_own_class() -> None:
    vectors = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    # Without leaving out, "b"'s only member would be its own prototype (top-1 = 1.0).
    assert prototype_top1(vectors, ["a", "a", "b"]) == pytest.approx(2 / 3)


def test_topk_accuracy_counts_the_true_class_among_the_k_best() -> None:
    scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.8], [0.5, 0.4, 0.6]])
    truth = np.array([0, 0, -1])
    assert topk_accuracy(scores, truth, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, truth, 3) == pytest.approx(2 / 3)  # -1 never counts


def brute_force_top1(
    vectors: np.ndarray,
    labels: list[str],
    k: int | None,
    seed: int,
    names: dict[str, np.ndarray] | None = None,
    weight: float = 0.0,
) -> float:
    """The oracle: per query, every class's support drawn by hand, the query left out;
    with ``names``, each prototype is normalise((1 - weight) unit mean + weight name)."""
    classes = sorted(set(labels))
    hits = 0
    for i, vector in enumerate(vectors):
        scores = []
        for name in classes:
            members = [j for j, label in enumerate(labels) if label == name]
            order = [members[t] for t in support_order(len(members), seed, name)]
            candidates = [j for j in order if j != i]
            support = candidates if k is None else candidates[:k]
            if not support:
                scores.append(-np.inf)
                continue
            prototype = vectors[support].mean(axis=0)
            prototype /= np.linalg.norm(prototype)
            if names is not None:
                prototype = (1 - weight) * prototype + weight * names[name]
                prototype /= np.linalg.norm(prototype)
            scores.append(prototype @ vector)
        hits += classes[int(np.argmax(scores))] == labels[i]
    return hits / len(labels)


@pytest.mark.parametrize("k", [1, 3, None])
def test_k_shot_accuracy_matches_the_brute_force_oracle(k: int | None) -> None:
    rng = np.random.default_rng(3)
    labels = [str(c) for c in rng.integers(0, 4, 40)]
    centres = rng.standard_normal((4, 8))
    vectors = l2_normalize(centres[[int(c) for c in labels]] + rng.standard_normal((40, 8)))

    got = k_shot_accuracy(vectors, labels, k, seeds=3)["top1"]

    seeds = 1 if k is None else 3
    expected = np.mean([brute_force_top1(vectors, labels, k, s) for s in range(seeds)])
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(("k", "weight"), [(1, 0.3), (3, 0.6), (None, 0.5)])
def test_name_mixed_k_shot_matches_the_brute_force_oracle(k: int | None, weight: float) -> None:
    rng = np.random.default_rng(4)
    labels = [str(c) for c in rng.integers(0, 4, 40)]
    centres = rng.standard_normal((4, 8))
    vectors = l2_normalize(centres[[int(c) for c in labels]] + 1.5 * rng.standard_normal((40, 8)))
    names = {str(c): row for c, row in enumerate(l2_normalize(rng.standard_normal((4, 8))))}

    got = k_shot_accuracy(vectors, labels, k, seeds=3, mix=NameMix(names, weight))["top1"]

    seeds = 1 if k is None else 3
    expected = np.mean(
        [brute_force_top1(vectors, labels, k, s, names, weight) for s in range(seeds)]
    )
    plain = np.mean([brute_force_top1(vectors, labels, k, s) for s in range(seeds)])
    assert got == pytest.approx(expected)
    assert expected != pytest.approx(plain)  # the names changed something here


def test_full_name_weight_is_zero_shot_and_zero_weight_is_photos_only() -> None:
    support = (np.array([[1, 0], [0, 1]], np.float32), ["a", "b"])
    queries = l2_normalize(np.array([[1, 0.2], [1, 0.1]], np.float32))
    names = {"a": np.array([0, 1], np.float32), "b": np.array([1, 0], np.float32)}

    photos = k_shot_accuracy(queries, ["a", "a"], None, support=support, mix=NameMix(names, 0))
    only_names = k_shot_accuracy(queries, ["a", "a"], None, support=support, mix=NameMix(names, 1))

    assert photos["top1"] == 1.0  # the photos say "a"
    assert only_names["top1"] == 0.0  # the (swapped) names say "b"


def test_name_mix_refuses_a_bad_weight_and_a_missing_class() -> None:
    with pytest.raises(ValueError, match="text weight"):
        NameMix({"a": np.ones(2)}, 1.5)
    with pytest.raises(ValueError, match="no name vector"):
        NameMix({"a": np.ones(2)}, 0.5).rows(["a", "b"])


def test_separate_support_set_is_not_left_out() -> None:
    support = (np.array([[1, 0], [0, 1]], np.float32), ["a", "b"])
    queries = np.array([[1, 0], [0.1, 1]], np.float32)

    accuracy = k_shot_accuracy(queries, ["a", "b"], 1, seeds=2, support=support)

    assert accuracy == {"top1": 1.0, "top5": 1.0}


# --------------------------------------------------------------------------- food101 evaluation


def test_evaluate_prototypes_on_a_food101_folder(tmp_path: Path) -> None:
    data = write_food101(tmp_path / "food", {"red_apple": 6, "green_salad": 5, "blue_cheese": 4})
    encoder = ColourEncoder()

    result = evaluate_prototypes(encoder, data, shots=(1, 5, 20), seeds=5)

    assert result["dataset"] == "food101" and result["n"] == 15 and result["n_classes"] == 3
    assert set(result["k_shot"]) == {"1", "5", "20", "all"}
    assert result["zero_shot"] == {"top1": 1.0, "top5": 1.0}  # found from the names alone
    assert {"red apple", "green salad", "blue cheese"} <= set(encoder.texts_seen)
    for figures in result["k_shot"].values():
        assert set(figures) == {"top1", "top5"}
        assert figures["top1"] == 1.0  # well-separated colours


def test_evaluation_with_a_text_weight_reports_photos_and_names(tmp_path: Path) -> None:
    data = write_food101(tmp_path / "food", {"red_apple": 6, "green_salad": 5, "blue_cheese": 4})

    plain = evaluate_prototypes(ColourEncoder(), data, shots=(1, 5), seeds=2)
    mixed = evaluate_prototypes(ColourEncoder(), data, shots=(1, 5), seeds=2, text_weight=0.5)

    assert "k_shot_with_names" not in plain and "text_weight" not in plain
    assert mixed["text_weight"] == 0.5
    assert mixed["k_shot"] == plain["k_shot"]  # photos-only figures are unchanged
    assert set(mixed["k_shot_with_names"]) == {"1", "5", "all"}
    assert mixed["k_shot_with_names"]["all"]["top1"] == 1.0


def test_a_query_is_never_its_own_support(tmp_path: Path) -> None:
    # One blue image: once it is left out, its class has no support and it must miss.
    data = write_food101(tmp_path / "food", {"red_apple": 4, "blue_cheese": 1})

    result = evaluate_prototypes(ColourEncoder(), data, shots=(1,), seeds=2)

    assert result["k_shot"]["1"]["top1"] == pytest.approx(4 / 5)
    assert result["k_shot"]["all"]["top1"] == pytest.approx(4 / 5)


def test_support_dir_supplies_the_prototypes(tmp_path: Path) -> None:
    data = write_food101(tmp_path / "query", {"red_apple": 3, "blue_cheese": 3}, seed=1)
    support = write_food101(tmp_path / "support", {"red_apple": 2, "blue_cheese": 1}, seed=2)

    result = evaluate_prototypes(ColourEncoder(), data, support_dir=support, shots=(1,), seeds=2)

    assert result["n"] == 6
    assert result["k_shot"]["1"]["top1"] == 1.0  # the blue query keeps its (other) support


def test_food101_evaluation_reports_progress_over_queries_then_support(tmp_path: Path) -> None:
    data = write_food101(tmp_path / "query", {"red_apple": 3, "blue_cheese": 3}, seed=1)
    support = write_food101(tmp_path / "support", {"red_apple": 2, "blue_cheese": 2}, seed=2)
    seen: list[tuple[int, int]] = []

    evaluate_records(
        ColourEncoder(),
        "food101",
        list(Food101Dataset(data)),
        support=list(Food101Dataset(support)),
        progress=lambda done, total: seen.append((done, total)),
    )

    assert seen == [(6, 10), (10, 10)]  # the 6 queries, then the 4 support photos
