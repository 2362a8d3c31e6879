"""Tagging an image: its nearest class prototypes and, optionally, the caller's
free-form candidate tags ranked by the similarity of their embedded text."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from index.snapshot import Snapshot
from service.embedding import Embedder
from service.errors import InvalidQueryError
from service.schemas import ClassMatchOut, EmbedInput, TagScore
from service.searching import class_matches


async def rank_tags(
    image_vector: np.ndarray, tags: Sequence[str], embedder: Embedder, k: int
) -> list[TagScore]:
    """The k candidate tags closest to a (1, dim) image vector, best first."""
    if not tags:
        return []
    vectors = await embedder.embed([EmbedInput.model_validate({"text": tag}) for tag in tags])
    scores = vectors @ image_vector[0]
    order = np.argsort(-scores, kind="stable")[:k]
    return [TagScore(tag=tags[i], score=float(scores[i])) for i in order]


async def tag_image(
    image_vector: np.ndarray,
    snapshot: Snapshot,
    embedder: Embedder,
    *,
    k: int,
    tags: Sequence[str] | None,
    max_tags: int,
) -> tuple[list[ClassMatchOut], list[TagScore]]:
    """(top-k classes, top-k of ``tags``) for one (1, dim) image vector."""
    candidates = list(dict.fromkeys(tags or ()))
    if len(candidates) > max_tags:
        raise InvalidQueryError(
            f"too many tags: at most {max_tags} per call, got {len(candidates)}"
        )
    classes = class_matches(snapshot, image_vector, k)
    return classes, await rank_tags(image_vector, candidates, embedder, k)
