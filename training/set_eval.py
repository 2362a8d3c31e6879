"""``mmsearch eval --similarity set``: one vector per item and a bundle's DivE sets side
by side, on the same cached inputs (:mod:`training.set_features`), and the sets' top
re-ranked when the bundle carries a trained re-ranker.

``single`` is the dot product of the joint vectors (as plain ``mmsearch eval``);
``set`` is the smooth-Chamfer similarity (``alpha`` 16, as ``/search`` uses) of the
bundle's set heads' K vectors per photo and per caption or recipe;
``set+rerank`` re-scores each query's top ``top`` of ``set`` as ``--rerank`` does
(:mod:`training.rerank_eval`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from models.encoders.base import Encoder
from models.rerank import Reranker
from models.set_encoding import SetEncoder
from models.set_similarity import DEFAULT_ALPHA
from models.types import CatalogRecord, ProgressCallback
from training.rerank_eval import paired_recalls, reranked_flickr
from training.rerank_features import CaptionedVectors
from training.set_features import PairedSetFeatures, paired_set_features
from training.set_losses import slot_diversity_loss
from training.train_set import Heads, all_sets, set_similarity, variants


def evaluate_sets(
    encoder: Encoder,
    sets: SetEncoder,
    dataset: str,
    records: Sequence[CatalogRecord],
    *,
    reranker: Reranker | None = None,
    top: int = 50,
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, object]:
    """The variants of flickr (captions and photos) or kfood (photos and recipes)."""
    if dataset not in ("flickr", "kfood"):
        raise ValueError(f"--similarity set is measured on kfood and flickr, not {dataset!r}")
    data = paired_set_features(encoder, dataset, records, cache_dir, progress)
    if len(data.images) < 2:
        raise ValueError(f"{dataset} evaluation needs at least two photos with their texts")
    found: dict[str, object] = variants(sets.heads, data, dataset, DEFAULT_ALPHA)
    if reranker is not None:
        first = set_similarity(sets.heads, data, DEFAULT_ALPHA)
        found["set+rerank"] = _reranked(data, dataset, reranker, top, first)
    result: dict[str, object] = {
        "dataset": dataset,
        "n_images": len(data.images),
        "n_texts": len(data.texts),
        "variants": found,
        "similarity": {"set_slots": sets.slots, "alpha": DEFAULT_ALPHA},
        "slot_mean_cosine": slot_cosines(sets.heads, data),
    }
    if reranker is not None:
        result["rerank"] = {"model": reranker.name, "top": top}
    return result


def slot_cosines(heads: Heads, data: PairedSetFeatures) -> dict[str, float]:
    """Mean cosine between two slots of one photo / text: 1.0 when the sets are K copies
    of the single vector, lower the more diverse they are."""
    photos, texts = all_sets(heads, data)
    return {
        side: float(slot_diversity_loss(torch.from_numpy(sets)))
        for side, sets in (("image", photos), ("text", texts))
    }


def _reranked(
    data: PairedSetFeatures, dataset: str, reranker: Reranker, top: int, first: np.ndarray
) -> dict[str, object]:
    """The sets' (texts x photos) order ``first`` with each query's top re-ranked, the
    re-ranker seeing what it sees at serve time (one row per photo and recipe)."""
    if dataset == "flickr":
        vectors = CaptionedVectors(data.ids, data.images, data.texts, data.owner, data.grams)
        return reranked_flickr(vectors, reranker, top, first)
    photos, recipes = data.images, data.texts  # kfood: recipe t is photo t's
    return {
        "image_to_recipe": paired_recalls(photos, recipes, reranker, top, first.T),
        "recipe_to_image": paired_recalls(recipes, photos, reranker, top, first),
    }
