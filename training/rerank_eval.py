"""``mmsearch eval --rerank``: the vector search alone and re-ranked, on the same vectors.

Each query's top ``top`` candidates by the vector score are re-scored by the
re-ranker and re-ordered by that score, ahead of every other candidate, whose
vector order stays; this is what ``/search`` does with ``"rerank"``
(:mod:`service.reranking`). So R@K for K >= ``top`` cannot change: re-ranking only
moves the positive inside the top.

What each side is, as at serve time (:mod:`models.rerank`):

- flickr text -> image: the caption's n-grams and vector against each photo's row;
- flickr image -> text: the same (caption, photo) pairs, scored the same way: the
  re-ranker reasons from the words of the text, so the caption takes the query's
  role whichever side asked (serving has no text items to rank for a photo);
- kfood image -> recipe and recipe -> image: each side's one vector (the service has
  no finer parts of a photo or a recipe query yet).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from models.encoders.base import Encoder
from models.rerank import Reranker, SetFeatures
from models.types import CatalogRecord, ProgressCallback
from training.evaluate import (
    encode_images,
    ranks_of_positives,
    readable_images,
    recall_summary,
    rsum,
)
from training.rerank_features import CaptionedVectors, captioned_vectors

# Scores of one query's top candidates, given the query row and the candidates' columns.
RowScorer = Callable[[int, np.ndarray], np.ndarray]


def reranked_similarity(similarity: np.ndarray, top: int, score_row: RowScorer) -> np.ndarray:
    """``similarity`` with each row's ``top`` highest entries replaced by re-ranker scores
    lifted above the rest of the row, so they come first in the re-ranker's order."""
    out = similarity.astype(np.float64, copy=True)
    top = min(top, similarity.shape[1])
    for row in range(len(similarity)):
        head = np.argsort(-similarity[row], kind="stable")[:top]
        scores = np.asarray(score_row(row, head), dtype=np.float64)
        floor = similarity[row].max() + 1.0  # above every vector score of the row
        out[row, head] = floor + scores - scores.min()
    return out


def recalls_of(similarity: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    summary = recall_summary(ranks_of_positives(similarity, positive))
    summary.pop("medR")
    return summary


def flickr_figures(t2i: np.ndarray, i2t: np.ndarray, positive: np.ndarray) -> dict[str, object]:
    text_to_image, image_to_text = recalls_of(t2i, positive), recalls_of(i2t, positive.T)
    return {
        "image_to_text": image_to_text,
        "text_to_image": text_to_image,
        "rsum": rsum(image_to_text, text_to_image),
    }


def _heads(similarity: np.ndarray, top: int) -> np.ndarray:
    return np.argsort(-similarity, axis=1, kind="stable")[:, : min(top, similarity.shape[1])]


def caption_photo_scores(
    vectors: CaptionedVectors, reranker: Reranker, top: int, t2i: np.ndarray
) -> dict[tuple[int, int], float]:
    """Re-ranker scores of every (caption, photo) pair that a top ``top`` of ``t2i`` (the
    first-stage caption -> photo scores) holds in either direction: one call per caption,
    with all the photos it is paired with."""
    wanted: dict[int, set[int]] = {c: set(map(int, row)) for c, row in enumerate(_heads(t2i, top))}
    for photo, row in enumerate(_heads(t2i.T, top)):
        for caption in row:
            wanted[int(caption)].add(photo)
    scores: dict[tuple[int, int], float] = {}
    for caption, photos in wanted.items():
        ordered = sorted(photos)
        found = reranker.score(vectors.caption(caption), [vectors.photo(j) for j in ordered])
        scores.update({(caption, j): float(x) for j, x in zip(ordered, found, strict=True)})
    return scores


def flickr_variants(
    vectors: CaptionedVectors, reranker: Reranker, top: int
) -> dict[str, dict[str, object]]:
    """``single`` and ``single+rerank`` figures of captions against photos."""
    t2i = vectors.texts @ vectors.images.T
    positive = vectors.owner[:, None] == np.arange(len(vectors.images))[None, :]
    return {
        "single": flickr_figures(t2i, t2i.T, positive),
        "single+rerank": reranked_flickr(vectors, reranker, top, t2i),
    }


def reranked_flickr(
    vectors: CaptionedVectors, reranker: Reranker, top: int, t2i: np.ndarray
) -> dict[str, object]:
    """Figures of the first stage ``t2i`` (caption -> photo scores: vectors or sets) with
    each query's top ``top`` re-ranked."""
    positive = vectors.owner[:, None] == np.arange(len(vectors.images))[None, :]
    pair = caption_photo_scores(vectors, reranker, top, t2i)

    def caption_to_photos(caption: int, photos: np.ndarray) -> np.ndarray:
        return np.asarray([pair[caption, int(j)] for j in photos])

    def photo_to_captions(photo: int, captions: np.ndarray) -> np.ndarray:
        # The caption is the query whichever side asked (see the module docstring).
        return np.asarray([pair[int(c), photo] for c in captions])

    return flickr_figures(
        reranked_similarity(t2i, top, caption_to_photos),
        reranked_similarity(t2i.T, top, photo_to_captions),
        positive,
    )


def _one_row(vectors: np.ndarray, i: int) -> SetFeatures:
    return SetFeatures(vectors[i : i + 1], vectors[i])


def paired_recalls(
    queries: np.ndarray,
    candidates: np.ndarray,
    reranker: Reranker | None,
    top: int,
    similarity: np.ndarray | None = None,
) -> dict[str, float]:
    """Row i of ``queries`` matches row i of ``candidates``; each side is its one vector.
    Without a re-ranker, the first stage alone: ``similarity`` (queries x candidates,
    e.g. of their sets), by default the vectors' dot products."""
    similarity = queries @ candidates.T if similarity is None else similarity
    positive = np.eye(len(queries), dtype=bool)
    if reranker is None:
        return recalls_of(similarity, positive)

    def score_row(row: int, head: np.ndarray) -> np.ndarray:
        return reranker.score(_one_row(queries, row), [_one_row(candidates, int(j)) for j in head])

    return recalls_of(reranked_similarity(similarity, top, score_row), positive)


def kfood_variants(
    encoder: Encoder,
    reranker: Reranker,
    records: Sequence[CatalogRecord],
    top: int,
    progress: ProgressCallback | None = None,
) -> dict[str, object]:
    """``single`` and ``single+rerank`` figures of photos against their recipes."""
    kept, images = readable_images(
        [r for r in records if r.recipe is not None and r.image_path is not None]
    )
    if len(kept) < 2:
        raise ValueError("kfood evaluation needs at least two recipes with readable photos")
    image_vecs = encode_images(encoder, images, progress)
    recipe_vecs = encoder.encode_recipes([r.recipe for r in kept if r.recipe is not None])
    variants = {
        name: {
            "image_to_recipe": paired_recalls(image_vecs, recipe_vecs, used, top),
            "recipe_to_image": paired_recalls(recipe_vecs, image_vecs, used, top),
        }
        for name, used in (("single", None), ("single+rerank", reranker))
    }
    return {"n": len(kept), "variants": variants}


def evaluate_with_rerank(
    encoder: Encoder,
    reranker: Reranker,
    dataset: str,
    records: Sequence[CatalogRecord],
    *,
    top: int,
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, object]:
    """The variants of one dataset side by side (``variants``), for kfood and flickr."""
    match dataset:
        case "flickr":
            vectors = captioned_vectors(encoder, records, cache_dir, progress)
            if len(vectors.images) < 2:
                raise ValueError("flickr evaluation needs at least two captioned images")
            figures: dict[str, object] = {
                "n_images": len(vectors.images),
                "n_texts": len(vectors.texts),
                "variants": flickr_variants(vectors, reranker, top),
            }
        case "kfood":
            figures = kfood_variants(encoder, reranker, records, top, progress)
        case _:
            raise ValueError(f"--rerank is measured on kfood and flickr, not {dataset!r}")
    return {"dataset": dataset, **figures, "rerank": {"model": reranker.name, "top": top}}
