"""Calibrated confidence: the probability that a match is a true one, from its score.

A cosine similarity says how close two vectors are, not how likely the match is
right: 0.45 may be a sure hit for a photo -> recipe query and noise for a caption
query. A bundle therefore carries one logistic curve per (query modality, row kind)
direction, fitted on validation pairs when the model is trained (Platt scaling with
the match's rank as a second input, ``training.trust``)::

    confidence = sigmoid(a * score + c * ln(rank) + b)        c <= 0

The rank matters because scores of one query are not comparable with another's:
the best of ten recipes at 0.31 is right far more often than the tenth at 0.31.

Directions never seen in validation (a raw vector query, say) use the pooled curve
of their row kind (``*->recipe``), and failing that the pooled curve of all pairs
(``*->*``). This module only applies curves; fitting them is training work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

ANY = "*"


def direction(query_kind: str, row_kind: str) -> str:
    return f"{query_kind}->{row_kind}"


@dataclass(frozen=True)
class Curve:
    """``sigmoid(a * score + c * ln(rank) + b)``: ``a`` > 0 and ``c`` <= 0, so a higher
    score or a better rank is never less confident."""

    a: float
    b: float
    c: float = 0.0

    def __post_init__(self) -> None:
        finite = all(math.isfinite(x) for x in (self.a, self.b, self.c))
        if not finite or self.a <= 0 or self.c > 0:
            raise ValueError(f"a calibration curve needs finite a > 0, c <= 0 and b, got {self}")

    def __call__(self, scores: np.ndarray, ranks: np.ndarray | int = 1) -> np.ndarray:
        """Confidence of matches with these scores at these 1-based ranks."""
        log_rank = np.log(np.maximum(np.asarray(ranks, dtype=np.float64), 1.0))
        z = self.a * np.asarray(scores, dtype=np.float64) + self.c * log_rank + self.b
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


@dataclass(frozen=True)
class Calibration:
    """The curves of one model, by direction (``"image->recipe"``, ``"*->recipe"``, ``"*->*"``)."""

    curves: Mapping[str, Curve]

    def __post_init__(self) -> None:
        if direction(ANY, ANY) not in self.curves:
            raise ValueError("a calibration needs the pooled '*->*' curve as its last resort")

    def curve(self, query_kind: str, row_kind: str) -> Curve:
        for key in (direction(query_kind, row_kind), direction(ANY, row_kind)):
            if key in self.curves:
                return self.curves[key]
        return self.curves[direction(ANY, ANY)]

    def confidence(
        self, query_kind: str, row_kind: str, scores: np.ndarray, ranks: np.ndarray | int = 1
    ) -> np.ndarray:
        return self.curve(query_kind, row_kind)(scores, ranks)

    def to_dict(self) -> dict[str, Any]:
        return {key: {"a": c.a, "b": c.b, "c": c.c} for key, c in sorted(self.curves.items())}

    @classmethod
    def from_dict(cls, data: object) -> Calibration:
        """Parse ``bundle.json``'s ``calibration`` object; ValueError when malformed."""
        if not isinstance(data, Mapping):
            raise ValueError("calibration must be an object of direction -> {a, b, c}")
        curves = {}
        for key, value in data.items():
            if not isinstance(value, Mapping) or not {"a", "b"} <= set(value) <= {"a", "b", "c"}:
                raise ValueError(f"calibration {key!r} must be an object with 'a', 'b' and 'c'")
            curves[str(key)] = Curve(
                float(value["a"]), float(value["b"]), float(value.get("c", 0.0))
            )
        return cls(curves)
