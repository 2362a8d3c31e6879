"""/search and /search/image with ``"similarity": "set"`` (DivE): the query's K set
vectors against the items' set rows, ranked by the exact smooth-Chamfer similarity
(:mod:`index.set_search`).

It needs both a bundle with set heads (the query's set) and a snapshot built with it
(the items' set rows); either missing is a 422 that says which. The shipped food-v1
has no set head, so ``"single"`` stays the default. Set search ranks by smooth-Chamfer
alone: filters, kinds, hybrid ranking, confidence and re-ranking are single-vector
features and are refused with it rather than silently ignored.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
from starlette.concurrency import run_in_threadpool

from index.snapshot import Snapshot
from service.embedding import Embedder
from service.errors import InvalidQueryError
from service.schemas import Match, SearchRequest, SearchResponse
from service.searching import class_matches

SET_QUERY_KINDS = ("text", "image", "recipe")


def check_set_ready(encoder: object, snapshot: Snapshot, model: str) -> None:
    """A 422 when the model has no set head or the snapshot no set rows."""
    if getattr(encoder, "sets", None) is None:
        raise InvalidQueryError(
            f"the model served ({model}) carries no trained set head, so it has no set "
            'vectors: search with "similarity": "single" (the default), or serve a '
            "bundle that has one"
        )
    if snapshot.sets is None:
        raise InvalidQueryError(
            f"snapshot {snapshot.version} has no set rows: re-index with the served bundle "
            "(a full build; chunked builds and item changes write none yet)"
        )


def refuse_with_sets(given: Mapping[str, bool]) -> None:
    """A 422 naming the single-vector options given (``given[name]`` true) with a set search."""
    refused = [name for name, is_given in given.items() if is_given]
    if refused:
        raise InvalidQueryError(f"similarity 'set' cannot be combined with {', '.join(refused)}")


def check_set_search(body: SearchRequest, encoder: object, snapshot: Snapshot, model: str) -> None:
    """A 422 saying why this set search cannot run, before any embedding work."""
    check_set_ready(encoder, snapshot, model)
    refuse_with_sets(
        {
            "filter": body.filter is not None,
            "kinds": body.kinds is not None,
            "rank 'hybrid'": body.rank == "hybrid",
            "min_confidence": body.min_confidence is not None,
            "rerank": body.rerank is not None,
        }
    )
    if body.query.compose is not None or body.query.modality not in SET_QUERY_KINDS:
        raise InvalidQueryError("similarity 'set' takes one text, image or recipe query")


async def search_sets(
    body: SearchRequest, snapshot: Snapshot, embedder: Embedder, started: float
) -> SearchResponse:
    """Embed the query's set, search the set rows, answer as /search does."""
    query_set = await embedder.embed_set(body.query)
    return await answer_sets(query_set, body.k, body.top_classes, snapshot, started)


async def answer_sets(
    query_set: np.ndarray, k: int, top_classes: int, snapshot: Snapshot, started: float
) -> SearchResponse:
    """The set rows searched with a (K, dim) query set; each match's ``score`` is the
    smooth-Chamfer of the query set and the item's best set."""
    found = await run_in_threadpool(snapshot.search_sets, query_set, k)
    # No confidence: the curves were fitted on single-vector cosine similarities.
    matches = [
        Match(
            id=m.item_id,
            score=m.score,
            rank=m.rank,
            kind=m.kind,
            label=m.label,
            class_name=None,
            item_score=None,
            class_score=None,
            confidence=None,
            metadata=m.metadata,
        )
        for m in found
    ]
    # Classes stay the prototypes of the query's mean set vector, as near a single vector
    # as the set offers.
    mean = np.mean(query_set, axis=0, keepdims=True)
    return SearchResponse(
        matches=matches,
        classes=class_matches(snapshot, mean, top_classes),
        index_version=snapshot.manifest.version,
        took_ms=round((time.perf_counter() - started) * 1000, 3),
    )
