"""Calibrated confidence: the probability that a match is a true one, from its score.

A cosine similarity says how close two vectors are, not how likely the match is
right: 0.45 may be a sure hit for a photo -> recipe query and noise for a caption
query. A bundle therefore carries one logistic curve per (query modality, row kind)
direction, fitted on validation pairs when the model is trained (Platt scaling,
``training.trust``)::

    confidence = sigmoid(a * score + b)

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
    """``sigmoid(a * score + b)``; ``a`` > 0 so a higher score is never less confident."""

    a: float
    b: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.a) and math.isfinite(self.b)) or self.a <= 0:
            raise ValueError(f"a calibration curve needs finite a > 0 and b, got {self}")

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        z = self.a * np.asarray(scores, dtype=np.float64) + self.b
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

    def confidence(self, query_kind: str, row_kind: str, scores: np.ndarray) -> np.ndarray:
        return self.curve(query_kind, row_kind)(scores)

    def to_dict(self) -> dict[str, Any]:
        return {key: {"a": c.a, "b": c.b} for key, c in sorted(self.curves.items())}

    @classmethod
    def from_dict(cls, data: object) -> Calibration:
        """Parse ``bundle.json``'s ``calibration`` object; ValueError when malformed."""
        if not isinstance(data, Mapping):
            raise ValueError("calibration must be an object of direction -> {a, b}")
        curves = {}
        for key, value in data.items():
            if not isinstance(value, Mapping) or set(value) != {"a", "b"}:
                raise ValueError(f"calibration {key!r} must be an object with 'a' and 'b'")
            curves[str(key)] = Curve(float(value["a"]), float(value["b"]))
        return cls(curves)
