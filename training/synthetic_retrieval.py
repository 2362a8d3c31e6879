"""Generated paired features for ``mmsearch train --dataset synthetic`` (tests, smoke runs).

Each item has a hidden 16-d latent; its image, query text, recipe title,
ingredients and instructions are different random linear views of the latent
plus noise, so the pairs are learnable but the untrained heads rank them near
chance. Labels are the latent's largest of its first four coordinates.
"""

from __future__ import annotations

import numpy as np

from training.features import FeatureSet, Ragged

LATENT = 16


def _view(rng: np.random.Generator, latent: np.ndarray, dim: int, noise: float) -> np.ndarray:
    projection = rng.normal(size=(latent.shape[1], dim)) / np.sqrt(latent.shape[1])
    out = latent @ projection + noise * rng.normal(size=(latent.shape[0], dim))
    return out.astype(np.float32)


def _sequences(
    rng: np.random.Generator, latent: np.ndarray, dim: int, lengths: np.ndarray
) -> Ragged:
    repeated = np.repeat(latent, lengths, axis=0)
    return Ragged(_view(rng, repeated, dim, 0.5), np.concatenate([[0], np.cumsum(lengths)]))


def make_synthetic_features(
    n: int, image_dim: int, text_dim: int, *, seed: int = 0, views: int = 2
) -> FeatureSet:
    """``n`` items with image, query text and recipe features (see the module docstring)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, LATENT))
    image_projection_seed = int(rng.integers(1 << 31))
    images = np.stack(
        [
            _view(np.random.default_rng(image_projection_seed), latent, image_dim, 0.0)
            + 0.3 * rng.normal(size=(n, image_dim)).astype(np.float32)
            for _ in range(views)
        ],
        axis=1,
    ).astype(np.float32)
    queries = _view(rng, latent, text_dim, 0.3)
    return FeatureSet(
        ids=[f"syn-{i}" for i in range(n)],
        labels=[f"class-{int(c)}" for c in latent[:, :4].argmax(axis=1)],
        images=images,
        has_image=np.ones(n, dtype=bool),
        queries=Ragged(queries, np.arange(n + 1, dtype=np.int64)),
        titles=_view(rng, latent, text_dim, 0.3),
        has_recipe=np.ones(n, dtype=bool),
        ingredients=_sequences(rng, latent, text_dim, rng.integers(1, 6, size=n)),
        instructions=_sequences(rng, latent, text_dim, rng.integers(1, 4, size=n)),
    )


def synthetic_feature_sets(
    image_dim: int, text_dim: int, *, seed: int = 0, val_fraction: float = 0.2, n: int = 240
) -> tuple[FeatureSet, FeatureSet]:
    """A train and a validation :class:`FeatureSet` drawn from one generator."""
    features = make_synthetic_features(n, image_dim, text_dim, seed=seed)
    n_val = max(2, int(round(n * val_fraction))) if val_fraction > 0 else 0
    return features.take(list(range(n - n_val))), features.take(list(range(n - n_val, n)))
