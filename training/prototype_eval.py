"""Evaluating class prototypes (Snell et al., 2017): nearest-prototype classification,
few-shot and zero-shot, on labelled vectors or a food101-format folder.

The prototypes themselves (the seeded support draw, the mean, the class-name text)
come from :mod:`models.prototype_math`, the same functions the index's prototype
tables use, so what is measured here is what the service serves.

No FastAPI, Redis or index here: :func:`evaluate_prototypes` only needs an
:class:`~models.encoders.base.Encoder` and a food101-format folder
(:func:`evaluate_prototype_records` the records read from one), and
:func:`prototype_top1` only vectors and labels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.datasets import Food101Dataset
from models.encoders.base import Encoder, l2_normalize
from models.images import InvalidImageError, load_image
from models.prototype_math import check_text_weight, class_text, mix_with_text, support_order
from models.types import CatalogRecord, ProgressCallback

logger = logging.getLogger(__name__)

DEFAULT_SHOTS = (1, 5, 20)
TOP_KS = (1, 5)


# --------------------------------------------------------------------------- classification


def topk_accuracy(scores: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Fraction of rows whose true column (``truth``; -1 = none) is among the k best.

    Ties count in the row's favour: only strictly better classes push it down.
    """
    if scores.shape[0] == 0:
        return 0.0
    known = truth >= 0
    true_scores = np.where(known, scores[np.arange(len(truth)), np.maximum(truth, 0)], np.inf)
    better = (scores > true_scores[:, None]).sum(axis=1)
    return float(np.mean(known & (better < k)))


def _own_class_scores(
    queries: np.ndarray, own_sums: np.ndarray, own_counts: np.ndarray
) -> np.ndarray:
    """Each query against its own class's prototype built without it (-inf when empty)."""
    norms = np.linalg.norm(own_sums, axis=1)
    dots = np.einsum("nd,nd->n", queries, own_sums)
    usable = (own_counts > 0) & (norms > 0)
    return np.where(usable, dots / np.where(usable, norms, 1.0), -np.inf)


def prototype_top1(vectors: np.ndarray, labels: Sequence[str]) -> float:
    """Leave-one-out nearest-prototype top-1 (all members as support).

    Each vector is classified against its own class's prototype without itself, so
    a class with one member cannot be predicted for that member (counted wrong).
    Used by the kfood evaluation for cuisine top-1.
    """
    return leave_one_out_scores(vectors, labels, ks=(1,))[1]


def leave_one_out_scores(
    vectors: np.ndarray, labels: Sequence[str], ks: Sequence[int] = TOP_KS
) -> dict[int, float]:
    """Top-k accuracies of leave-one-out nearest-prototype classification (K = all)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    classes, truth = _class_index(labels)
    sums, counts = _class_sums(matrix, truth, len(classes))
    scores = matrix @ l2_normalize(sums).T
    scores[np.arange(len(truth)), truth] = _own_class_scores(
        matrix, sums[truth] - matrix, counts[truth] - 1
    )
    return {k: topk_accuracy(scores, truth, k) for k in ks}


def _class_index(labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    classes = sorted(set(labels))
    position = {name: i for i, name in enumerate(classes)}
    return classes, np.array([position[label] for label in labels], dtype=np.int64)


def _class_sums(matrix: np.ndarray, truth: np.ndarray, n_classes: int) -> tuple[np.ndarray, ...]:
    sums = np.zeros((n_classes, matrix.shape[1]), dtype=np.float64)
    np.add.at(sums, truth, matrix)
    return sums.astype(np.float32), np.bincount(truth, minlength=n_classes)


# --------------------------------------------------------------------------- K-shot episodes


class NameMix:
    """Class-name vectors mixed into K-shot prototypes: normalise((1 - w) proto + w name).

    The same mixing the index applies with ``text_weight``; ``names`` maps each
    class to its embedded name (a unit vector).
    """

    def __init__(self, names: Mapping[str, np.ndarray], weight: float) -> None:
        self.names = {name: np.asarray(v, dtype=np.float32) for name, v in names.items()}
        self.weight = check_text_weight(weight)  # refused here, not at the first draw

    def rows(self, classes: Sequence[str]) -> np.ndarray:
        """The name vectors of ``classes``, in that order."""
        missing = [name for name in classes if name not in self.names]
        if missing:
            raise ValueError(f"no name vector for classes {missing[:5]}")
        return np.stack([self.names[name] for name in classes])

    def apply(self, prototypes: np.ndarray, names: np.ndarray) -> np.ndarray:
        return mix_with_text(l2_normalize(prototypes), names, self.weight)


class _LabelledVectors:
    """Encoded images with their class positions (in ``classes``; -1 = not among them)."""

    def __init__(self, vectors: np.ndarray, labels: Sequence[str], classes: Sequence[str]) -> None:
        position = {name: i for i, name in enumerate(classes)}
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.truth = np.array([position.get(label, -1) for label in labels], dtype=np.int64)
        self.classes = list(classes)

    def members(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.truth == c)


def _k_shot_scores(
    queries: _LabelledVectors,
    support: _LabelledVectors,
    k: int | None,
    seed: int,
    same: bool,
    mix: NameMix | None = None,
) -> np.ndarray:
    """(n_queries, C) cosine scores against K-shot prototypes drawn with ``seed``.

    When queries and support are the same images, a query drawn into its own
    class's support is replaced there by the next member of the draw, so it is
    never its own example and the support keeps K members where the class can.
    ``mix`` mixes each class's name into its prototype (own-class ones included).
    """
    n_classes = len(support.classes)
    sums = np.zeros((n_classes, support.vectors.shape[1]), dtype=np.float32)
    own_sums = np.zeros_like(queries.vectors)
    own_counts = np.zeros(len(queries.truth), dtype=np.int64)
    for c, name in enumerate(support.classes):
        members = support.members(c)
        order = members[support_order(members.size, seed, name)]
        chosen = order if k is None else order[:k]
        sums[c] = support.vectors[chosen].sum(axis=0)
        if same:
            _leave_out_own(queries, c, order, chosen.size, sums[c], own_sums, own_counts)
    prototypes = l2_normalize(sums)
    if mix is not None:
        prototypes = mix.apply(sums, mix.rows(support.classes))
    scores = queries.vectors @ prototypes.T
    if same:
        rows = np.flatnonzero(queries.truth >= 0)
        own = own_sums[rows]
        if mix is not None:
            own = mix.apply(own, mix.rows(support.classes)[queries.truth[rows]])
        scores[rows, queries.truth[rows]] = _own_class_scores(
            queries.vectors[rows], own, own_counts[rows]
        )
    return scores


def _leave_out_own(
    queries: _LabelledVectors,
    c: int,
    order: np.ndarray,
    n_chosen: int,
    class_sum: np.ndarray,
    own_sums: np.ndarray,
    own_counts: np.ndarray,
) -> None:
    """Fill the own-class support sums of class c's queries (see :func:`_k_shot_scores`)."""
    members = order  # same images: support members are query rows too
    own_sums[members] = class_sum
    own_counts[members] = n_chosen
    drawn = order[:n_chosen]
    if n_chosen < order.size:  # the next member stands in for a drawn query
        own_sums[drawn] += queries.vectors[order[n_chosen]]
    else:
        own_counts[drawn] -= 1
    own_sums[drawn] -= queries.vectors[drawn]


def k_shot_accuracy(
    vectors: np.ndarray,
    labels: Sequence[str],
    k: int | None,
    *,
    seeds: int = 5,
    support: tuple[np.ndarray, Sequence[str]] | None = None,
    mix: NameMix | None = None,
) -> dict[str, float]:
    """Nearest-prototype top-1 / top-5 of ``vectors`` with K-shot prototypes (K None: all).

    ``support`` is another (vectors, labels) set to draw from; None draws from
    ``vectors`` themselves, leaving each query out of its own class's support.
    Averaged over ``seeds`` draws (seeds 0 .. seeds - 1; one draw for K = all).
    ``mix`` mixes the class names into the prototypes.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    support_vectors, support_labels = support if support is not None else (vectors, labels)
    classes = sorted(set(support_labels))
    queries = _LabelledVectors(vectors, labels, classes)
    support_set = _LabelledVectors(support_vectors, support_labels, classes)
    return _k_shot_accuracy(queries, support_set, k, seeds, same=support is None, mix=mix)


def _k_shot_accuracy(
    queries: _LabelledVectors,
    support: _LabelledVectors,
    k: int | None,
    seeds: int,
    same: bool,
    mix: NameMix | None,
) -> dict[str, float]:
    draws = 1 if k is None else seeds
    totals = dict.fromkeys(TOP_KS, 0.0)
    for seed in range(draws):
        scores = _k_shot_scores(queries, support, k, seed, same, mix)
        for top in TOP_KS:
            totals[top] += topk_accuracy(scores, queries.truth, top)
    return {f"top{top}": totals[top] / draws for top in TOP_KS}


# --------------------------------------------------------------------------- food101 evaluation


def labelled_images(records: Iterable[CatalogRecord]) -> list[tuple[Path, str]]:
    """(image path, label) of the records that have both; the others cannot be scored."""
    return [
        (r.image_path, r.label) for r in records if r.image_path is not None and r.label is not None
    ]


def encode_labelled_images(
    encoder: Encoder,
    pending: Sequence[tuple[Path, str]],
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """(vectors, labels) of :func:`labelled_images`' pairs; unreadable images are logged
    and left out. ``progress`` gets the number of images handled after every batch."""
    vectors: list[np.ndarray] = []
    labels: list[str] = []
    for start in range(0, len(pending), batch_size):
        _encode_batch(encoder, pending[start : start + batch_size], vectors, labels)
        if progress is not None:
            progress(min(len(pending), start + batch_size))
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), np.float32)
    return stacked, labels


def _encode_batch(
    encoder: Encoder,
    batch: Sequence[tuple[Path, str]],
    vectors: list[np.ndarray],
    labels: list[str],
) -> None:
    images, kept = [], []
    for path, label in batch:
        try:
            images.append(load_image(path))
        except InvalidImageError as exc:
            logger.warning("left out of the evaluation: %s", exc)
            continue
        kept.append(label)
    if images:
        vectors.append(l2_normalize(encoder.encode_images(images)))
        labels.extend(kept)


def name_vectors(
    encoder: Encoder, classes: Sequence[str], descriptions: Mapping[str, str] | None = None
) -> np.ndarray:
    """(C, dim) unit vectors of the embedded class names (and descriptions), in order."""
    descriptions = descriptions or {}
    texts = [class_text(name, descriptions.get(name)) for name in classes]
    return l2_normalize(encoder.encode_texts(texts))


def zero_shot_accuracy(
    encoder: Encoder,
    queries: np.ndarray,
    labels: Sequence[str],
    classes: Sequence[str],
    descriptions: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 of classifying by the embedded class names alone."""
    prototypes = name_vectors(encoder, classes, descriptions)
    labelled = _LabelledVectors(queries, labels, classes)
    scores = labelled.vectors @ prototypes.T
    return {f"top{k}": topk_accuracy(scores, labelled.truth, k) for k in TOP_KS}


def evaluate_prototype_records(
    encoder: Encoder,
    records: Sequence[CatalogRecord],
    support: Sequence[CatalogRecord] | None = None,
    *,
    classes: Sequence[str] | None = None,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: int = 5,
    batch_size: int = 32,
    text_weight: float = 0.0,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Classify every labelled image of ``records`` by its nearest prototype.

    Prototypes come from ``support`` (default: ``records`` themselves, each image
    then left out of its own class's support) with K in ``shots`` (averaged over
    ``seeds`` seeded draws) and K = all; zero-shot prototypes are the embedded
    names of ``classes`` (default: the records' labels). Returns fractions in [0, 1]::

        {"dataset": "food101", "n": N, "n_classes": C, "seeds": S,
         "zero_shot": {"top1", "top5"},
         "k_shot": {"1": {"top1", "top5"}, "5": {...}, "20": {...}, "all": {...}}}

    ``text_weight`` > 0 adds ``"k_shot_with_names"`` (same keys) and
    ``"text_weight"``: the K-shot prototypes mixed with the class names, as the
    index's ``text_weight`` does; ``"k_shot"`` stays photos only.
    """
    queries = labelled_images(records)
    own_support = support is None or support is records
    support_images = [] if own_support else labelled_images(support or [])
    # One bar over the queries and then the support: encoding them is the slow part.
    total = len(queries) + len(support_images)

    def report(offset: int) -> Callable[[int], None] | None:
        return None if progress is None else (lambda done: progress(offset + done, total))

    vectors, labels = encode_labelled_images(encoder, queries, batch_size, report(0))
    other = None
    if not own_support:
        other = encode_labelled_images(encoder, support_images, batch_size, report(len(queries)))

    def k_shot_table(mix: NameMix | None = None) -> dict[str, dict[str, float]]:
        settings = [*((str(k), k) for k in sorted(set(shots))), ("all", None)]
        return {
            key: k_shot_accuracy(vectors, labels, k, seeds=seeds, support=other, mix=mix)
            for key, k in settings
        }

    zero_shot_classes = list(classes) if classes is not None else sorted(set(labels))
    result: dict[str, Any] = {
        "dataset": "food101",
        "n": len(labels),
        "n_classes": len(zero_shot_classes),
        "seeds": seeds,
        "zero_shot": zero_shot_accuracy(encoder, vectors, labels, zero_shot_classes),
        "k_shot": k_shot_table(),
    }
    if text_weight > 0:
        support_classes = sorted(set(other[1] if other is not None else labels))
        names = name_vectors(encoder, support_classes)
        result["text_weight"] = text_weight
        result["k_shot_with_names"] = k_shot_table(
            NameMix(dict(zip(support_classes, names, strict=True)), text_weight)
        )
    return result


def evaluate_prototypes(
    encoder: Encoder,
    data_dir: Path | str,
    support_dir: Path | str | None = None,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: int = 5,
    batch_size: int = 32,
    text_weight: float = 0.0,
) -> dict[str, Any]:
    """:func:`evaluate_prototype_records` on a food101-format folder (``labels.tsv``,
    ``classes.txt``): its images are the queries and, unless ``support_dir`` names
    another folder, the support; zero-shot uses the names in its classes.txt."""
    dataset = Food101Dataset(Path(data_dir).expanduser().absolute())
    records = list(dataset)
    support = None
    if support_dir is not None and Path(support_dir).resolve() != Path(data_dir).resolve():
        support = list(Food101Dataset(Path(support_dir).expanduser().absolute()))
    return evaluate_prototype_records(
        encoder,
        records,
        support,
        classes=dataset.classes,
        shots=shots,
        seeds=seeds,
        batch_size=batch_size,
        text_weight=text_weight,
    )
