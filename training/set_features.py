"""What the DivE set heads see, for a dataset of photos paired with texts, cached.

Exactly what :class:`models.set_encoding.SetEncoder` computes at serve time, before
its heads: a photo's regions (:func:`models.set_encoding.image_regions`) and joint
vector; a text's word n-gram joint vectors and its own joint vector. The texts are
flickr's captions (several per photo) or kfood's recipes (one per photo: the n-grams
of title and ingredients, :func:`models.set_encoding.recipe_set_text`). An n-gram
shared by many texts is embedded once.

Cached under ``cache_dir/set-features`` keyed by the encoder's fingerprint, the kind
and the records' content (:func:`training.features.records_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.encoders.base import Encoder
from models.rerank import MAX_NGRAM, MAX_PARTS
from models.set_encoding import image_regions, recipe_set_text, region_dim
from models.towers import Towers
from models.types import CatalogRecord, ProgressCallback
from training.evaluate import encode_images, readable_images
from training.features import Ragged, load_feature_arrays, records_key, save_feature_arrays
from training.local_features import caption_grams

SET_FEATURES_VERSION = 1
KINDS = ("flickr", "kfood")
TEXT_BATCH = 256
REGION_BATCH = 32


@dataclass(frozen=True)
class PairedSetFeatures:
    ids: list[str]  # one per kept photo record
    regions: np.ndarray  # (n_images, cells, region_dim) float16; cells may be 0
    images: np.ndarray  # (n_images, dim) joint photo vectors
    texts: np.ndarray  # (n_texts, dim) joint caption / recipe vectors
    owner: np.ndarray  # (n_texts,) each text's photo
    grams: Ragged  # per text: (n_grams, dim) joint n-gram vectors

    def take(self, photos: Sequence[int]) -> PairedSetFeatures:
        """These photos (in this order) with their texts."""
        position = {int(j): i for i, j in enumerate(photos)}
        texts = [t for t, j in enumerate(self.owner) if int(j) in position]
        rows = np.asarray(photos, dtype=np.int64)
        return PairedSetFeatures(
            [self.ids[int(j)] for j in photos],
            self.regions[rows],
            self.images[rows],
            self.texts[texts],
            np.asarray([position[int(self.owner[t])] for t in texts], dtype=np.int64),
            self.grams.take(texts),
        )


def paired_set_features(
    encoder: Encoder,
    kind: str,
    records: Sequence[CatalogRecord],
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> PairedSetFeatures:
    """Set-head inputs of every record with a readable photo and captions (flickr) or a
    recipe (kfood)."""
    if kind not in KINDS:
        raise ValueError(f"set features are for {KINDS}, not {kind!r}")
    wanted = [r for r in records if (r.texts if kind == "flickr" else r.recipe is not None)]
    kept, images = readable_images(wanted)
    path = _cache_path(cache_dir, encoder, kind, kept) if cache_dir is not None else None
    if path is not None and path.is_file():
        return load_feature_arrays(path, PairedSetFeatures)
    if kind == "flickr":
        texts = [t for r in kept for t in r.texts]
        owner = [i for i, r in enumerate(kept) for _ in r.texts]
        whole = _encode_texts(encoder, texts)
    else:
        recipes = [r.recipe for r in kept if r.recipe is not None]
        texts, owner = [recipe_set_text(r) for r in recipes], list(range(len(kept)))
        whole = encoder.encode_recipes(recipes)
    features = PairedSetFeatures(
        ids=[r.id for r in kept],
        regions=_regions(_towers_of(encoder), images, encoder.dim),
        images=encode_images(encoder, images, progress),
        texts=np.asarray(whole, np.float32),
        owner=np.asarray(owner, dtype=np.int64),
        grams=caption_grams(texts, lambda grams: _encode_texts(encoder, grams)),
    )
    if path is not None:
        save_feature_arrays(path, features)
    return features


def _towers_of(encoder: Encoder) -> Towers | None:
    return getattr(encoder, "towers", None)


def _regions(towers: Towers | None, images: list, dim: int) -> np.ndarray:
    if towers is None:  # not a bundle: no regions
        return np.zeros((len(images), 0, dim), np.float16)
    local_dim = region_dim(towers, dim)
    parts = [
        image_regions(towers, images[i : i + REGION_BATCH], local_dim)
        for i in range(0, len(images), REGION_BATCH)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0, local_dim), np.float16)


def _encode_texts(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    chunks = [
        encoder.encode_texts(list(texts[i : i + TEXT_BATCH]))
        for i in range(0, len(texts), TEXT_BATCH)
    ]
    return np.concatenate(chunks) if chunks else np.empty((0, encoder.dim), np.float32)


def _cache_path(
    cache_dir: Path, encoder: Encoder, kind: str, records: Sequence[CatalogRecord]
) -> Path:
    grams = f"n{MAX_NGRAM}x{MAX_PARTS}"
    key = f"{encoder.fingerprint}-{kind}-{records_key(records)}-{grams}-s{SET_FEATURES_VERSION}"
    return cache_dir / "set-features" / f"{key}.npz"
