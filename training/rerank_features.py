"""What a re-ranker sees at serve time, for a captioned image set, computed once and cached.

At serve time (:mod:`service.reranking`) a text query is its vector (the whole) and
its word n-grams embedded one by one (the parts); a photo item is its stored photo
row. So the re-ranker is trained and evaluated on exactly those: the encoder's
(e.g. the shipped bundle's) photo vectors, caption vectors and caption n-gram
vectors, all in the joint space. An n-gram shared by many captions ("a dog") is
embedded once.

Cached under ``cache_dir/rerank-features`` keyed by the encoder's fingerprint and
the records' content (:func:`training.features.records_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.encoders.base import Encoder
from models.rerank import MAX_NGRAM, MAX_PARTS, SetFeatures
from models.types import CatalogRecord, ProgressCallback
from training.evaluate import encode_images, readable_images
from training.features import Ragged, load_feature_arrays, records_key, save_feature_arrays
from training.local_features import caption_grams

RERANK_FEATURES_VERSION = 1
TEXT_BATCH = 256


@dataclass(frozen=True)
class CaptionedVectors:
    ids: list[str]  # one per kept image record
    images: np.ndarray  # (n_images, dim) photo vectors
    texts: np.ndarray  # (n_texts, dim) caption vectors, encoded as queries
    owner: np.ndarray  # (n_texts,) index of each caption's image
    grams: Ragged  # per caption: (n_grams, dim) its word n-gram vectors

    def caption(self, i: int) -> SetFeatures:
        """Caption ``i`` as a text query is at serve time: n-grams and its vector."""
        return SetFeatures(self.grams.row(i), self.texts[i])

    def photo(self, j: int) -> SetFeatures:
        """Photo ``j`` as a photo item is at serve time: its one row."""
        return SetFeatures(self.images[j : j + 1], self.images[j])

    def take(self, photos: Sequence[int]) -> CaptionedVectors:
        """These photos (in this order) with their captions."""
        position = {int(j): i for i, j in enumerate(photos)}
        captions = [c for c, j in enumerate(self.owner) if int(j) in position]
        return CaptionedVectors(
            [self.ids[int(j)] for j in photos],
            self.images[np.asarray(photos, dtype=np.int64)],
            self.texts[captions],
            np.asarray([position[int(self.owner[c])] for c in captions], dtype=np.int64),
            self.grams.take(captions),
        )


def captioned_vectors(
    encoder: Encoder,
    records: Sequence[CatalogRecord],
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> CaptionedVectors:
    """Vectors of every record with a readable photo and captions (see the module doc)."""
    kept, images = readable_images([r for r in records if r.texts])
    path = _cache_path(cache_dir, encoder, kept) if cache_dir is not None else None
    if path is not None and path.is_file():
        return load_feature_arrays(path, CaptionedVectors)
    captions = [t for r in kept for t in r.texts]
    features = CaptionedVectors(
        ids=[r.id for r in kept],
        images=encode_images(encoder, images, progress),
        texts=_encode_texts(encoder, captions),
        owner=np.asarray([i for i, r in enumerate(kept) for _ in r.texts], dtype=np.int64),
        grams=caption_grams(captions, lambda texts: _encode_texts(encoder, texts)),
    )
    if path is not None:
        save_feature_arrays(path, features)
    return features


def _encode_texts(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    chunks = [
        encoder.encode_texts(list(texts[i : i + TEXT_BATCH]))
        for i in range(0, len(texts), TEXT_BATCH)
    ]
    return np.concatenate(chunks) if chunks else np.empty((0, encoder.dim), np.float32)


def _cache_path(cache_dir: Path, encoder: Encoder, records: Sequence[CatalogRecord]) -> Path:
    grams = f"n{MAX_NGRAM}x{MAX_PARTS}"
    key = f"{encoder.fingerprint}-{records_key(records)}-{grams}-r{RERANK_FEATURES_VERSION}"
    return cache_dir / "rerank-features" / f"{key}.npz"
