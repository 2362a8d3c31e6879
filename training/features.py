"""Tower features of a dataset, computed once and cached, so training epochs are cheap.

:func:`extract_features` reads :class:`CatalogRecord` s and keeps, per record:
the image's features under ``views`` versions (view 0 is the evaluation
transform, the rest are seeded random crops / flips / colour jitter, which is
the augmentation training samples from), the query texts (captions; else the
recipe title; else the class name: what a user would type to find the item),
and the recipe as title, ingredient and instruction vectors (sequences of
varying length, stored flat with offsets).

Texts are embedded once each however often they occur (ingredients like 소금
repeat across hundreds of recipes). The result is cached under
``cache_dir/features`` keyed by the towers' fingerprint, the records' content
(ids, texts, image file sizes and times) and the number of views.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from models.files import atomic_write
from models.images import load_record_images
from models.towers import Towers
from models.types import CatalogRecord, ProgressCallback

log = logging.getLogger(__name__)

FEATURES_VERSION = 1

T = TypeVar("T")


@dataclass(frozen=True)
class Ragged:
    """Variable-length rows of vectors: row i is ``values[offsets[i]:offsets[i + 1]]``."""

    values: np.ndarray  # (total, dim) float32
    offsets: np.ndarray  # (n + 1,) int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, indices: Sequence[int]) -> Ragged:
        return Ragged.from_rows([self.row(int(i)) for i in indices], self.values.shape[1])

    @staticmethod
    def from_rows(rows: Sequence[np.ndarray], dim: int) -> Ragged:
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(r) for r in rows])
        values = np.concatenate(rows) if rows else np.empty((0, dim), np.float32)
        return Ragged(values.reshape(-1, dim).astype(np.float32, copy=False), offsets)


@dataclass(frozen=True)
class FeatureSet:
    """Frozen-tower features of ``len(ids)`` records (see the module docstring)."""

    ids: list[str]
    labels: list[str | None]
    images: np.ndarray  # (n, views, image_dim); zeros where has_image is False
    has_image: np.ndarray  # (n,) bool
    queries: Ragged  # query-text vectors per record
    titles: np.ndarray  # (n, text_dim); zeros where has_recipe is False
    has_recipe: np.ndarray  # (n,) bool
    ingredients: Ragged
    instructions: Ragged

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, indices: Sequence[int]) -> FeatureSet:
        idx = np.asarray(indices, dtype=np.int64)
        return FeatureSet(
            ids=[self.ids[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            images=self.images[idx],
            has_image=self.has_image[idx],
            queries=self.queries.take(idx.tolist()),
            titles=self.titles[idx],
            has_recipe=self.has_recipe[idx],
            ingredients=self.ingredients.take(idx.tolist()),
            instructions=self.instructions.take(idx.tolist()),
        )


def query_texts(record: CatalogRecord) -> list[str]:
    """What a user would type to find this record (see the module docstring)."""
    if record.texts:
        return [t for t in record.texts if t.strip()]
    if record.recipe is not None:
        return [record.recipe.title]
    if record.label:
        return [class_name_text(record.label)]
    return []


def class_name_text(label: str) -> str:
    """``apple_pie`` -> ``apple pie``: a class name as a person would write it."""
    return " ".join(label.replace("_", " ").split())


# --------------------------------------------------------------------------- cache key


def records_key(records: Sequence[CatalogRecord]) -> str:
    digest = hashlib.sha256()
    for r in records:
        stat = r.image_path.stat() if r.image_path and r.image_path.is_file() else None
        entry = {
            "id": r.id,
            "label": r.label,
            "texts": list(r.texts),
            "recipe": None
            if r.recipe is None
            else [r.recipe.title, *r.recipe.ingredients, "|", *r.recipe.instructions],
            "image": None
            if stat is None
            else [r.image_path.name if r.image_path else None, stat.st_size, stat.st_mtime_ns],
        }
        digest.update(json.dumps(entry, ensure_ascii=False, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def cache_path(
    cache_dir: Path, towers: Towers, records: Sequence[CatalogRecord], views: int, seed: int
) -> Path:
    # The seed picks the augmented views: a cache made under another seed would
    # make the same command give other weights depending on what was cached.
    key = f"{towers.fingerprint}-{records_key(records)}-v{views}-seed{seed}-f{FEATURES_VERSION}"
    return cache_dir / "features" / f"{key}.npz"


def save_feature_arrays(path: Path, features: Any, **extra: np.ndarray) -> None:
    """Write a features dataclass to ``path`` (.npz), atomically: its arrays as they are,
    each :class:`Ragged` as ``name.values`` / ``name.offsets``, its ``ids`` as strings,
    and ``extra`` arrays beside them. :func:`load_feature_arrays` reads it back."""
    arrays = {"ids": np.asarray(features.ids, dtype=object).astype(str), **extra}
    for f in fields(features):
        value = getattr(features, f.name)
        if isinstance(value, Ragged):
            arrays[f"{f.name}.values"] = value.values
            arrays[f"{f.name}.offsets"] = value.offsets
        elif isinstance(value, np.ndarray):
            arrays[f.name] = value
    atomic_write(path, lambda fp: np.savez(fp, **arrays))  # type: ignore[arg-type]


def load_feature_arrays(path: Path, cls: type[T], **given: Any) -> T:
    """The ``cls`` instance :func:`save_feature_arrays` wrote to ``path``; fields in
    ``given`` are taken from there instead of the file."""
    with np.load(path, allow_pickle=False) as data:
        values: dict[str, Any] = dict(given)
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name in given:
                continue
            if f.name == "ids":
                values["ids"] = [str(x) for x in data["ids"]]
            elif f"{f.name}.values" in data:
                values[f.name] = Ragged(data[f"{f.name}.values"], data[f"{f.name}.offsets"])
            else:
                values[f.name] = data[f.name]
        return cls(**values)


def _save(path: Path, features: FeatureSet) -> None:
    labels = features.labels
    save_feature_arrays(
        path,
        features,
        labels=np.asarray(["" if x is None else x for x in labels]).astype(str),
        has_label=np.asarray([x is not None for x in labels]),
    )


def _load(path: Path) -> FeatureSet:
    with np.load(path, allow_pickle=False) as data:
        labels = [
            str(x) if has else None
            for x, has in zip(data["labels"], data["has_label"], strict=True)
        ]
    return load_feature_arrays(path, FeatureSet, labels=labels)


# --------------------------------------------------------------------------- extraction


def _embed_unique(towers: Towers, groups: Sequence[Sequence[str]], *, query: bool) -> Ragged:
    """Vectors for every text of every group, each distinct text embedded once."""
    unique = sorted({t for group in groups for t in group})
    vectors = towers.text_features(unique, query=query) if unique else None
    position = {t: i for i, t in enumerate(unique)}
    rows = [
        vectors[[position[t] for t in group]]
        if group and vectors is not None
        else np.empty((0, towers.text_dim), np.float32)
        for group in groups
    ]
    return Ragged.from_rows(rows, towers.text_dim)


def _image_features(
    towers: Towers,
    records: Sequence[CatalogRecord],
    views: int,
    seed: int,
    progress: ProgressCallback | None,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    n = len(records)
    out = np.zeros((n, views, towers.image_dim), dtype=np.float32)
    has = np.zeros(n, dtype=bool)
    for start in range(0, n, batch_size):
        idx, images = load_record_images(records, start, batch_size)
        if images:
            out[idx, 0] = towers.image_features(images)
            if views > 1:
                out[idx, 1:] = towers.augmented_image_features(images, views - 1, seed + start)
            has[idx] = True
        if progress is not None:
            progress(min(n, start + batch_size), n)
    return out, has


def extract_features(
    towers: Towers,
    records: Sequence[CatalogRecord],
    *,
    views: int = 4,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    images: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
) -> FeatureSet:
    """Features of ``records`` (cached under ``cache_dir`` when given).

    ``images`` returns (features (n, views, image_dim), has_image (n,))
    computed elsewhere (from cached tower maps, see :mod:`training.tower_tuning`)
    in place of the towers' image passes; it is called only on a cache miss.
    """
    if views < 1:
        raise ValueError("views must be at least 1")
    path = cache_path(cache_dir, towers, records, views, seed) if cache_dir else None
    if path is not None:
        cached = _load_cached(path, views)
        if cached is not None:
            return cached
    if images is None:
        image_features, has_image = _image_features(towers, records, views, seed, progress)
    else:
        image_features, has_image = images()
    recipes = [r.recipe for r in records]
    features = FeatureSet(
        ids=[r.id for r in records],
        labels=[r.label for r in records],
        images=image_features,
        has_image=has_image,
        queries=_embed_unique(towers, [query_texts(r) for r in records], query=True),
        titles=_titles(towers, records),
        has_recipe=np.asarray([r is not None for r in recipes]),
        ingredients=_embed_unique(
            towers, [list(r.ingredients) if r else [] for r in recipes], query=False
        ),
        instructions=_embed_unique(
            towers, [list(r.instructions) if r else [] for r in recipes], query=False
        ),
    )
    if path is not None:
        _save(path, features)
    return features


def _load_cached(path: Path, views: int) -> FeatureSet | None:
    """The cached features, or those of a cache with more views cut to ``views``."""
    prefix, suffix = path.name.split(f"-v{views}-", 1)
    candidates = [path] + sorted(path.parent.glob(f"{prefix}-v*-{suffix}"), reverse=True)
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            features = _load(candidate)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable feature cache %s (%s)", candidate, exc)
            continue
        if features.images.shape[1] >= views:
            log.info("tower features from cache %s", candidate)
            return replace(features, images=features.images[:, :views])
    return None


def _titles(towers: Towers, records: Sequence[CatalogRecord]) -> np.ndarray:
    titles = _embed_unique(
        towers, [[r.recipe.title] if r.recipe else [] for r in records], query=False
    )
    out = np.zeros((len(records), towers.text_dim), dtype=np.float32)
    for i in range(len(records)):
        row = titles.row(i)
        if len(row):
            out[i] = row[0]
    return out
