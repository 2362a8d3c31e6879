"""Retrieval metrics (Recall@K, medR, RSUM) and the dataset evaluations of ``mmsearch eval``.

Ranks are 1-based: the rank of a query is the position of its best-ranked
correct candidate. Recall@K is the fraction of queries with rank <= K; medR is
the median rank (lower is better). RSUM is the sum of R@1, R@5 and R@10 in
both directions, in percent points, as the image-text literature reports it.

The evaluations take any :class:`~models.encoders.base.Encoder` (the offline
default, open_clip, or a trained bundle) and rank every item of the folder
against every item of the other modality in the same folder: the folder *is*
the evaluation set, no split is applied.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.encoders.base import Encoder
from models.images import InvalidImageError, load_image
from models.types import CatalogRecord, ProgressCallback
from training.prototype_eval import evaluate_prototype_records, prototype_top1

KS = (1, 5, 10)


def ranks_of_positives(similarity: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """1-based rank of the best-scored positive of each query row.

    ``similarity`` and ``positive`` are (queries, candidates); every query needs
    at least one positive. Ties count against the query (pessimistic).
    """
    if similarity.shape != positive.shape:
        raise ValueError("similarity and positive must have the same shape")
    if not positive.any(axis=1).all():
        raise ValueError("every query needs at least one positive candidate")
    best_positive = np.where(positive, similarity, -np.inf).max(axis=1)
    higher_or_tied_negatives = ((similarity >= best_positive[:, None]) & ~positive).sum(axis=1)
    return higher_or_tied_negatives + 1


def recall_summary(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """``{"R@1", "R@5", "R@10", "medR"}`` (fractions in [0, 1]; medR in ranks)."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no ranks to summarise")
    summary = {f"R@{k}": float((ranks <= k).mean()) for k in ks}
    summary["medR"] = float(np.median(ranks))
    return summary


def paired_recall(queries: np.ndarray, candidates: np.ndarray) -> dict[str, float]:
    """Row i of ``queries`` matches row i of ``candidates`` (cosine / inner product)."""
    similarity = queries @ candidates.T
    return recall_summary(ranks_of_positives(similarity, np.eye(len(queries), dtype=bool)))


def rsum(*directions: dict[str, float]) -> float:
    """Sum of R@1, R@5, R@10 over the directions, in percent points."""
    return 100.0 * sum(d[f"R@{k}"] for d in directions for k in KS)


# --------------------------------------------------------------------------- datasets


def readable_images(records: Sequence[CatalogRecord]) -> tuple[list[CatalogRecord], list]:
    kept, images = [], []
    for record in records:
        if record.image_path is None:
            continue
        try:
            images.append(load_image(record.image_path))
        except InvalidImageError:
            continue
        kept.append(record)
    return kept, images


def encode_images(
    encoder: Encoder, images: list, progress: ProgressCallback | None, batch: int = 64
) -> np.ndarray:
    parts = []
    for start in range(0, len(images), batch):
        parts.append(encoder.encode_images(images[start : start + batch]))
        if progress is not None:
            progress(min(len(images), start + batch), len(images))
    return np.concatenate(parts) if parts else np.empty((0, encoder.dim), np.float32)


def evaluate_kfood(
    encoder: Encoder, records: Sequence[CatalogRecord], progress: ProgressCallback | None = None
) -> dict[str, object]:
    """image -> recipe and recipe -> image over every record with both."""
    both = [r for r in records if r.recipe is not None and r.image_path is not None]
    kept, images = readable_images(both)
    if len(kept) < 2:
        raise ValueError("kfood evaluation needs at least two recipes with readable photos")
    image_vecs = encode_images(encoder, images, progress)
    recipe_vecs = encoder.encode_recipes([r.recipe for r in kept if r.recipe is not None])
    result: dict[str, object] = {
        "dataset": "kfood",
        "n": len(kept),
        "image_to_recipe": paired_recall(image_vecs, recipe_vecs),
        "recipe_to_image": paired_recall(recipe_vecs, image_vecs),
    }
    labels = [r.label for r in kept]
    if all(label is not None for label in labels) and len(set(labels)) > 1:
        result["cuisine_prototype_top1"] = prototype_top1(image_vecs, [str(x) for x in labels])
    return result


def evaluate_flickr(
    encoder: Encoder, records: Sequence[CatalogRecord], progress: ProgressCallback | None = None
) -> dict[str, object]:
    """image -> text (any of its captions) and text -> image, with RSUM."""
    kept, images = readable_images([r for r in records if r.texts])
    if len(kept) < 2:
        raise ValueError("flickr evaluation needs at least two captioned images")
    image_vecs = encode_images(encoder, images, progress)
    captions = [t for r in kept for t in r.texts]
    owner = np.asarray([i for i, r in enumerate(kept) for _ in r.texts])
    text_vecs = encoder.encode_texts(captions)
    positive = owner[:, None] == np.arange(len(kept))[None, :]  # (texts, images)
    text_to_image = recall_summary(ranks_of_positives(text_vecs @ image_vecs.T, positive))
    image_to_text = recall_summary(ranks_of_positives(image_vecs @ text_vecs.T, positive.T))
    for d in (text_to_image, image_to_text):
        d.pop("medR")
    return {
        "dataset": "flickr",
        "n_images": len(kept),
        "n_texts": len(captions),
        "image_to_text": image_to_text,
        "text_to_image": text_to_image,
        "rsum": rsum(image_to_text, text_to_image),
    }


def evaluate_records(
    encoder: Encoder,
    dataset: str,
    records: Sequence[CatalogRecord],
    *,
    support: Sequence[CatalogRecord] | None = None,
    text_weight: float = 0.0,
    progress: ProgressCallback | None = None,
) -> dict[str, object]:
    """The ``mmsearch eval`` entry point: ``records`` are the evaluation set.

    For food101, ``support`` (default: ``records`` themselves, leaving each
    query out of its own class's support) gives the class prototypes, and
    ``text_weight`` > 0 also scores them mixed with the class names.
    """
    match dataset:
        case "kfood":
            return evaluate_kfood(encoder, records, progress)
        case "flickr":
            return evaluate_flickr(encoder, records, progress)
        case "food101":
            return evaluate_prototype_records(
                encoder, records, support, text_weight=text_weight, progress=progress
            )
        case _:
            raise ValueError(f"unknown dataset {dataset!r}; expected kfood, flickr or food101")
