"""How search orders items: by their own similarity, or hybrid with their class prototype.

``item`` (the default): an item's score is the cosine similarity of the query and
its best row, ``sim(q, item)``.

``hybrid``: an item of class c scores::

    score = (1 - a) * sim(q, item) + a * sim(q, proto(c))

with ``a`` the class weight in [0, 1] and ``proto(c)`` the class's prototype from
the snapshot's table (:mod:`index.prototypes`). An item without a class keeps
``sim(q, item)``: no class evidence for or against it. The class term is the same
for every row of an item, so the item's best row is still its most similar row.

Hybrid results are exact over the rows FAISS ranks: rows are fetched by item
similarity and the fetch widened until the k-th hybrid score is at least the best
score any row not fetched yet could reach, ``(1 - a) * s_last + a * max(p_max,
s_last)`` where ``s_last`` is the lowest similarity fetched and ``p_max`` the best
prototype similarity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

RankMode = Literal["item", "hybrid"]
RANK_MODES: tuple[str, ...] = ("item", "hybrid")
DEFAULT_CLASS_WEIGHT = 0.3


@dataclass(frozen=True)
class Ranking:
    mode: RankMode = "item"
    class_weight: float = DEFAULT_CLASS_WEIGHT

    def __post_init__(self) -> None:
        if self.mode not in RANK_MODES:
            raise ValueError(f"unknown rank mode {self.mode!r}; expected one of {RANK_MODES}")
        if not 0.0 <= self.class_weight <= 1.0:
            raise ValueError(f"class weight must be in [0, 1], got {self.class_weight}")


@dataclass(frozen=True)
class RankedRows:
    """Candidate rows sorted by ranking score, best first."""

    scores: np.ndarray  # ranking scores
    item_scores: np.ndarray  # sim(q, row)
    class_scores: np.ndarray  # sim(q, proto(class(row))), NaN without a class or in item mode
    rows: np.ndarray


class RowScorer:
    """Turns row similarities into ranking scores for one query."""

    def __init__(self, ranking: Ranking, prototype_scores: np.ndarray, row_classes: np.ndarray):
        self.ranking = ranking
        self._hybrid = ranking.mode == "hybrid" and prototype_scores.size > 0
        self._prototype_scores = prototype_scores
        self._row_classes = row_classes

    def rank(self, item_scores: np.ndarray, rows: np.ndarray) -> RankedRows:
        class_scores = self._class_scores(rows)
        scores = item_scores
        if self._hybrid:
            a = self.ranking.class_weight
            mixed = (1.0 - a) * item_scores + a * class_scores
            scores = np.where(np.isnan(class_scores), item_scores, mixed)
        order = np.argsort(-scores, kind="stable")
        return RankedRows(scores[order], item_scores[order], class_scores[order], rows[order])

    def _class_scores(self, rows: np.ndarray) -> np.ndarray:
        if not self._hybrid:
            return np.full(rows.shape, np.nan, dtype=np.float32)
        classes = self._row_classes[rows]
        known = classes >= 0
        return np.where(known, self._prototype_scores[np.where(known, classes, 0)], np.nan)

    def unseen_bound(self, last_item_score: float) -> float:
        """The best ranking score of a row whose similarity is at most ``last_item_score``."""
        if not self._hybrid:
            return last_item_score
        a = self.ranking.class_weight
        best_class = max(float(self._prototype_scores.max()), last_item_score)
        return (1.0 - a) * last_item_score + a * best_class
