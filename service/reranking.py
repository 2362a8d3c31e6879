"""Re-ranking the top of a vector search with a trained re-ranker (``"rerank"`` in /search).

The vector search fetches ``max(k, top)`` items; the first ``top`` are re-scored
by the re-ranker (:class:`models.rerank.Reranker`, e.g. SGRAF) and re-ordered by
that score, which each of them carries as ``rerank_score``; the items after them
keep their vector-search order; ranks are renumbered and the list cut to ``k``.
Re-ranking is for precision at the top: a re-ranker looks at local features
(words against the parts of an item), which is too slow for a whole catalog but
affordable for a few dozen candidates.

What each side is made of is described in :mod:`models.rerank`: a text query's
word n-grams, an item's stored rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from index.snapshot import Snapshot
from models.encoders import l2_normalize
from models.rerank import Reranker, SetFeatures, rerankers_of
from service.embedding import Embedder
from service.errors import InvalidQueryError, RerankerUnavailableError
from service.schemas import Match, RerankIn, SearchQuery


@dataclass(frozen=True)
class RerankPlan:
    reranker: Reranker
    top: int
    query: SetFeatures

    def fetch(self, k: int) -> int:
        """How many items the vector search must return for this plan."""
        return max(k, self.top)

    def apply(self, matches: list[Match], snapshot: Snapshot, k: int) -> list[Match]:
        """The top ``top`` of ``matches`` re-ordered by the re-ranker, the rest as they were,
        renumbered and cut to ``k`` (runs the model: call it off the event loop)."""
        head, tail = matches[: self.top], matches[self.top :]
        candidates = [candidate_features(snapshot, match.id) for match in head]
        scores = self.reranker.score(self.query, candidates)
        # Stable: equal re-ranker scores keep the vector search's order.
        order = np.argsort(-scores, kind="stable")
        reranked = [head[i].model_copy(update={"rerank_score": float(scores[i])}) for i in order]
        return [
            match.model_copy(update={"rank": rank})
            for rank, match in enumerate([*reranked, *tail][:k], start=1)
        ]


def reranker_for(
    encoder: object, request: RerankIn | None, model_name: str, max_k: int
) -> Reranker | None:
    """The re-ranker a request names (None when it asks for none), or a 422 saying why
    it cannot be had."""
    if request is None:
        return None
    if request.top > max_k:
        raise InvalidQueryError(f"rerank top must be at most {max_k} (got {request.top})")
    found = rerankers_of(encoder).get(request.model)
    if found is None:
        raise RerankerUnavailableError(
            f"the model served ({model_name}) carries no trained {request.model!r} re-ranker: "
            "search without 'rerank', or serve a bundle that has one"
        )
    return found


async def query_parts(
    reranker: Reranker | None, query: SearchQuery, embedder: Embedder
) -> np.ndarray | None:
    """A plain text query's word n-grams, embedded, when a re-ranker will need them. The
    route awaits this beside the query vector, so both reach the encode batcher together
    and can share one batch."""
    if reranker is None or query.compose is not None or query.text is None:
        return None
    return await embedder.embed_text_parts(query.text)


def plan_rerank(
    request: RerankIn | None,
    reranker: Reranker | None,
    vector: np.ndarray,
    parts: np.ndarray | None,
) -> RerankPlan | None:
    """None without re-ranking; otherwise the plan, with the query's side: a text query's
    n-grams (``parts``) or else its one vector (image regions are not wired into serving
    yet), and the query vector as its whole."""
    if request is None or reranker is None:
        return None
    return RerankPlan(
        reranker, request.top, SetFeatures(vector if parts is None else parts, vector[0])
    )


def candidate_features(snapshot: Snapshot, item_id: str) -> SetFeatures:
    """An item's stored rows as its parts, their normalised mean as its whole."""
    rows = np.asarray(snapshot.item_vectors(item_id), dtype=np.float32)
    return SetFeatures(rows, l2_normalize(rows.mean(axis=0, keepdims=True))[0])
