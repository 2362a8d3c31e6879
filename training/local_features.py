"""Local features of a captioned image dataset, computed once and cached: what SGRAF and
the DivE set head train on.

- image regions: the 49 cells of the offline image tower's last feature map
  (:meth:`models.towers.OfflineTowers.image_regions`), float16;
- text parts: each caption's word n-grams (:func:`models.rerank.word_ngrams`)
  embedded by the text tower as queries. The packaged e5 exposes no token
  states, so n-grams stand in for words; an n-gram shared by many captions
  ("a dog") is embedded once.

Cached under ``cache_dir/local-features`` keyed by the towers' fingerprint and the
records' content (:func:`training.features.records_key`), like the pooled features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.images import load_image
from models.rerank import MAX_NGRAM, MAX_PARTS, word_ngrams
from models.towers import OfflineTowers
from models.types import CatalogRecord
from training.features import Ragged, load_feature_arrays, records_key, save_feature_arrays

LOCAL_FEATURES_VERSION = 1


@dataclass(frozen=True)
class LocalFeatureSet:
    ids: list[str]  # one per image record
    regions: np.ndarray  # (n_images, cells, region_dim) float16
    caption_owner: np.ndarray  # (n_captions,) index of each caption's image
    grams: Ragged  # per caption: (n_grams, text_dim) float16 n-gram vectors


def local_cache_path(
    cache_dir: Path, towers: OfflineTowers, records: Sequence[CatalogRecord]
) -> Path:
    grams = f"n{MAX_NGRAM}x{MAX_PARTS}"
    key = f"{towers.fingerprint}-{records_key(records)}-{grams}-l{LOCAL_FEATURES_VERSION}"
    return cache_dir / "local-features" / f"{key}.npz"


def local_features(
    towers: OfflineTowers,
    records: Sequence[CatalogRecord],
    cache_dir: Path | None = None,
    batch_size: int = 32,
) -> LocalFeatureSet:
    """Regions of every record with a photo and n-gram vectors of its captions."""
    records = [r for r in records if r.image_path is not None and r.texts]
    path = local_cache_path(cache_dir, towers, records) if cache_dir is not None else None
    if path is not None and path.is_file():
        return load_feature_arrays(path, LocalFeatureSet)
    regions = np.concatenate(
        [
            towers.image_regions(
                [load_image(r.image_path) for r in records[i : i + batch_size] if r.image_path]
            )
            for i in range(0, len(records), batch_size)
        ]
    )
    owner = [i for i, r in enumerate(records) for _ in r.texts]
    captions = [t for r in records for t in r.texts]
    grams = caption_grams(
        captions, lambda texts: towers.text_features(texts, query=True).astype(np.float16)
    )
    features = LocalFeatureSet([r.id for r in records], regions, np.asarray(owner), grams)
    if path is not None:
        save_feature_arrays(path, features)
    return features


def caption_grams(captions: Sequence[str], embed: Callable[[list[str]], np.ndarray]) -> Ragged:
    """Each caption's word n-gram vectors, an n-gram shared by many captions embedded
    once by ``embed``."""
    per_caption = [word_ngrams(c) for c in captions]
    unique = sorted({g for grams in per_caption for g in grams})
    vectors = np.asarray(embed(unique))
    position = {g: i for i, g in enumerate(unique)}
    rows = [position[g] for grams in per_caption for g in grams]
    offsets = np.concatenate([[0], np.cumsum([len(g) for g in per_caption])]).astype(np.int64)
    return Ragged(vectors[rows], offsets)
