"""A search request's query -> one unit query vector (and the items to leave out).

Terms: text, image, recipe (embedded), a raw vector, an existing item (the mean of
its rows), or a tag: the prototype of the class of that name, or, for a class the
index does not know, the embedded tag text (so a tag finds images either way).

Composition (``compose``): every term becomes a unit vector ``v_i`` and the query
is ``normalise(sum_i w_i * v_i)``, so ``photo - "dog" + "cat"`` moves a photo's
vector away from one concept and towards another. Unit terms first means weights
alone decide each term's pull, whatever the modality's typical norm. A single
term with a positive weight is exactly the plain search with that term.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from starlette.concurrency import run_in_threadpool

from index.snapshot import Snapshot
from models.calibration import ANY
from models.encoders import l2_normalize
from models.prototype_math import class_text
from service.embedding import Embedder
from service.errors import InvalidQueryError
from service.schemas import ComposeTerm, EmbedInput, QueryTerm, SearchQuery
from service.searching import item_query_vector, raw_query_vector

# Embedded together as one batch; a text term goes alone, through the query lexicon,
# so that a one-term composition is exactly the plain search.
BATCHED_MODALITIES = frozenset({"image", "recipe"})
# What a query counts as for confidence curves: a tag is a typed class name; raw
# vectors, stored items and compositions have no one modality (the pooled curve).
_CONFIDENCE_KINDS = {"text": "text", "image": "image", "recipe": "recipe", "tag": "text"}
# A sum this short is cancellation (a term added and subtracted), not a direction.
MIN_COMPOSED_NORM = 1e-4


def query_kind(query: SearchQuery) -> str:
    return _CONFIDENCE_KINDS.get(query.modality, ANY)


async def query_vector(
    query: SearchQuery, embedder: Embedder, snapshot: Snapshot, max_terms: int
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The (1, dim) unit query row and the item ids to leave out of the results."""
    if query.compose is not None:
        return await composed_vector(query.compose, embedder, snapshot, max_terms)
    return await term_vector(query, embedder, snapshot)


async def term_vector(
    term: QueryTerm, embedder: Embedder, snapshot: Snapshot
) -> tuple[np.ndarray, tuple[str, ...]]:
    """One term's (1, dim) unit vector; an item term also names the item to leave out."""
    if (vector := term.raw_vector()) is not None:
        return raw_query_vector(vector, snapshot.manifest.dim), ()
    if term.item_id is not None:
        vector = await run_in_threadpool(item_query_vector, snapshot, term.item_id)
        return vector, (term.item_id,)
    if term.tag is not None:
        return await tag_vector(term.tag, embedder, snapshot), ()
    if term.text is not None:
        return await embedder.embed_text_query(term), ()
    return await embedder.embed([term]), ()


async def tag_vector(tag: str, embedder: Embedder, snapshot: Snapshot) -> np.ndarray:
    """The class's prototype when the index has a class of that name, else the tag's text."""
    prototype = snapshot.prototypes.vector_of(tag)
    if prototype is not None:
        return np.array(prototype, dtype=np.float32)[None, :]
    # The same reading as a typed text query, lexicon expansion included.
    return await embedder.embed_text_query(EmbedInput.model_validate({"text": class_text(tag)}))


async def composed_vector(
    terms: Sequence[ComposeTerm], embedder: Embedder, snapshot: Snapshot, max_terms: int
) -> tuple[np.ndarray, tuple[str, ...]]:
    """normalise(sum_i w_i * unit(term_i)); 422 when the sum cancels out."""
    if len(terms) > max_terms:
        raise InvalidQueryError(f"compose has {len(terms)} terms; at most {max_terms} allowed")
    units, exclude = await _term_vectors(terms, embedder, snapshot)
    weights = np.array([term.weight for term in terms], dtype=np.float32)
    total = weights @ units
    if float(np.linalg.norm(total)) < MIN_COMPOSED_NORM:
        raise InvalidQueryError(
            "the weighted sum of the compose terms is (almost) zero, so it has no direction "
            "to search in: check for a term that is added and subtracted, or all-zero weights"
        )
    return l2_normalize(total[None, :]), exclude


async def _term_vectors(
    terms: Sequence[ComposeTerm], embedder: Embedder, snapshot: Snapshot
) -> tuple[np.ndarray, tuple[str, ...]]:
    """(n_terms, dim) unit vectors; embedded terms go to the encoder as one batch."""
    units = np.zeros((len(terms), snapshot.manifest.dim), dtype=np.float32)
    embedded = [i for i, term in enumerate(terms) if term.modality in BATCHED_MODALITIES]
    if embedded:
        units[embedded] = await embedder.embed([terms[i] for i in embedded])
    exclude: list[str] = []
    for i, term in enumerate(terms):
        if term.modality not in BATCHED_MODALITIES:
            vector, excluded = await term_vector(term, embedder, snapshot)
            units[i] = vector[0]
            exclude += excluded
    return l2_normalize(units), tuple(dict.fromkeys(exclude))
