"""The benchmark's catalog: clustered unit vectors, built into a real snapshot.

Each item is drawn around one of ``N_CLUSTERS`` unit centres and labelled by it, so
class prototypes are scored as in production; queries are new draws around the same
centres. Uniform random vectors would be the worst case for graph indexes, not a
catalog's shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.build import build_snapshot
from models.encoders.base import l2_normalize
from models.types import CatalogRecord, Recipe

N_CLUSTERS = 100
SPREAD = 0.35  # noise around a centre, relative to the centre's unit norm
N_QUERIES = 2000


@dataclass(frozen=True)
class Workload:
    vectors: np.ndarray  # (n, dim) unit rows: the catalog
    labels: np.ndarray  # (n,) cluster of each row
    queries: np.ndarray  # (N_QUERIES, dim) unit rows


def clustered(
    n: int, centres: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) unit vectors drawn around unit centres, and each one's cluster."""
    dim = centres.shape[1]
    labels = rng.integers(0, N_CLUSTERS, n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * SPREAD / np.sqrt(dim)
    return l2_normalize(centres[labels] + noise), labels


def workload(size: int, dim: int) -> Workload:
    """The same vectors for the same size in every run (seeded by the size)."""
    rng = np.random.default_rng(size)
    centres = l2_normalize(rng.standard_normal((N_CLUSTERS, dim)).astype(np.float32))
    vectors, labels = clustered(size, centres, rng)
    queries, _ = clustered(N_QUERIES, centres, rng)
    return Workload(vectors, labels, queries)


class PrecomputedEncoder:
    """Hands build_snapshot the benchmark's vectors: the text ``row:N:SIZE`` is row N.

    It carries the served model's fingerprint so that the server loads the snapshot.
    """

    def __init__(self, vectors: np.ndarray, fingerprint: str) -> None:
        self._vectors = vectors
        self.fingerprint = fingerprint
        self.dim = vectors.shape[1]
        self.device = "cpu"

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._vectors[[int(text.split(":")[1]) for text in texts]]

    def encode_images(self, images: Sequence[object]) -> np.ndarray:
        raise NotImplementedError("the benchmark catalog has no images")

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray:
        raise NotImplementedError("the benchmark catalog has no recipes")


def build(
    index_dir: Path, vectors: np.ndarray, labels: np.ndarray, factory: str, model: str
) -> str:
    """Build and publish a snapshot of ``vectors`` under ``model``; its version."""
    n = len(vectors)
    records = (
        # The catalog's size is in the text: the same text under the same fingerprint
        # is reused from the live snapshot (index.reuse), but each size draws its own
        # vectors, so an unsalted "row:N" would keep the previous size's vector.
        CatalogRecord(id=f"item-{i}", texts=(f"row:{i}:{n}",), label=f"cluster-{label}")
        for i, label in enumerate(labels.tolist())
    )
    encoder = PrecomputedEncoder(vectors, model)
    manifest = build_snapshot(records, encoder, index_dir, factory=factory, batch_size=4096)
    return manifest.version
