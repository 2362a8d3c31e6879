"""Plain data types shared by encoders, dataset readers, the index and training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# progress(done, total): items processed so far, and the total when known. Long work
# (index builds, re-index jobs, feature extraction, evaluation) reports through it.
ProgressCallback = Callable[[int, int | None], None]

# How two vectors are compared: cosine similarity, or negative squared Euclidean distance.
Metric = Literal["cosine", "euclidean"]
METRICS: tuple[Metric, ...] = ("cosine", "euclidean")


def check_metric(metric: str) -> Metric:
    """``metric`` as a :data:`Metric`; anything else is a ValueError."""
    match metric:
        case "cosine" | "euclidean":
            return metric
        case _:
            raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")


@dataclass(frozen=True)
class Recipe:
    """A recipe as the encoders see it: ordered ingredients and instructions."""

    title: str
    ingredients: tuple[str, ...] = ()
    instructions: tuple[str, ...] = ()

    def as_text(self) -> str:
        """One flat text, used where no trained recipe encoder exists."""
        parts = [self.title]
        if self.ingredients:
            parts.append("Ingredients: " + ", ".join(self.ingredients))
        if self.instructions:
            parts.append("Instructions: " + " ".join(self.instructions))
        return "\n".join(parts)


@dataclass(frozen=True)
class CatalogRecord:
    """One catalog item read from a dataset, before encoding.

    An item may carry several modalities; each becomes one (or more) vector
    rows in the index, tagged by kind: ``image``, ``text`` (one row per
    text, e.g. several captions) and ``recipe``.
    """

    id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    image_path: Path | None = None
    texts: tuple[str, ...] = ()
    recipe: Recipe | None = None
    label: str | None = None  # class name used for prototypes (cuisine, food101 label)
