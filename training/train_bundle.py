"""``mmsearch train`` end to end: datasets -> cached features -> split -> train -> bundle.

Each ``(dataset, data_dir)`` source is read, split into train / validation by a
hash of each record's id (:func:`~models.datasets.split_records`, so the split
is stable and independent of file order), turned into tower features once
(cached), and the joint model is trained on all sources together. The bundle
records the options, the split and the validation figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import check_image_size, check_image_tta, save_bundle
from models.datasets import open_dataset, split_records
from models.files import save_state_dict
from models.joint import JointConfig
from models.towers import OfflineTowers, Towers, load_towers
from models.types import CatalogRecord, ProgressCallback, check_metric
from training.errors import ConfigError
from training.features import FeatureSet, extract_features, records_key
from training.synthetic_retrieval import synthetic_feature_sets
from training.tower_tuning import (
    TowerMaps,
    TuneConfig,
    extract_maps,
    load_cached_top,
    tune_top,
)
from training.train import EpochCallback, TrainConfig, TrainResult, train_joint

log = logging.getLogger(__name__)

TRAIN_DATASETS = ("kfood", "food101", "flickr", "synthetic")
# Datasets whose records carry a class label the tower's top can be tuned on.
LABELLED_DATASETS = ("kfood", "food101")
# Image features of one source computed from cached tower maps, on demand.
ImagesFromMaps = Callable[[], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Source:
    dataset: str
    data_dir: Path | None  # None only for "synthetic"

    def __post_init__(self) -> None:
        if self.dataset not in TRAIN_DATASETS:
            raise ConfigError(
                f"unknown {{dataset}} {self.dataset!r}; expected one of {', '.join(TRAIN_DATASETS)}"
            )


@dataclass(frozen=True)
class BundleRequest:
    sources: tuple[Source, ...]
    out_dir: Path
    base: str = "offline"
    val_fraction: float = 0.2
    views: int = 4
    dim: int = 384
    hidden: int = 1024
    metric: str = "cosine"
    cache_dir: Path | None = None
    device: str = "auto"
    tune_tower: TuneConfig | None = None  # fine-tune the offline image tower's top first
    image_tta: str = "none"  # how the bundle embeds images once trained (models.bundle.IMAGE_TTA)
    image_size: int | None = None  # the side photos are embedded at once trained (offline)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("name at least one {sources}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("{val_fraction} must be in [0, 1)")
        if self.views < 1 or self.dim < 1 or self.hidden < 1:
            raise ConfigError("{views}, {dim} and {hidden} must be at least 1")
        checks: tuple[tuple[str, Callable[[Any], object], object], ...] = (
            ("metric", check_metric, self.metric),
            ("image_tta", check_image_tta, self.image_tta),
            ("image_size", check_image_size, self.image_size),
        )
        for name, check, value in checks:
            try:
                check(value)  # the checks bundle.json gets, so the two cannot drift apart
            except ValueError as exc:
                raise ConfigError(f"{{{name}}}: {exc}") from exc
        self._check_offline_options()

    def _check_offline_options(self) -> None:
        if self.image_size is not None and self.base != "offline":
            raise ConfigError("{image_size} works with {base} offline only")
        if self.tune_tower is None:
            return
        if self.base != "offline":
            raise ConfigError("{tune_tower} works with {base} offline only")
        if not any(s.dataset in LABELLED_DATASETS for s in self.sources):
            raise ConfigError(
                "{tune_tower} needs a labelled dataset (kfood or food101) among {sources}"
            )


def _read_records(source: Source) -> list[CatalogRecord]:
    if source.data_dir is None:
        raise ValueError(f"--dataset {source.dataset} needs a --data-dir")
    return list(open_dataset(source.data_dir, source.dataset))


def _split_features(
    towers: Towers,
    source: Source,
    records: list[CatalogRecord] | None,
    request: BundleRequest,
    config: TrainConfig,
    progress: ProgressCallback | None,
    images: ImagesFromMaps | None = None,
) -> tuple[FeatureSet, FeatureSet]:
    if records is None:  # the synthetic source: generated features, no files
        return synthetic_feature_sets(
            towers.image_dim, towers.text_dim, seed=config.seed, val_fraction=request.val_fraction
        )
    features = extract_features(
        towers,
        records,
        views=request.views,
        seed=config.seed,
        cache_dir=request.cache_dir,
        progress=progress,
        images=images,
    )
    val_ids = _val_ids(records, request, config)
    val_idx = [i for i, id_ in enumerate(features.ids) if id_ in val_ids]
    train_idx = [i for i, id_ in enumerate(features.ids) if id_ not in val_ids]
    log.info("%s: %d train / %d validation records", source.dataset, len(train_idx), len(val_idx))
    return features.take(train_idx), features.take(val_idx)


def _val_ids(records: list[CatalogRecord], request: BundleRequest, config: TrainConfig) -> set[str]:
    _, val = split_records(records, request.val_fraction, seed=config.seed)
    return {r.id for r in val}


def _tuned_towers(
    towers: Towers,
    all_records: list[list[CatalogRecord] | None],
    request: BundleRequest,
    config: TrainConfig,
    progress: ProgressCallback | None,
) -> tuple[OfflineTowers, list[ImagesFromMaps | None]]:
    """Fine-tune the image tower's top on the labelled training records of every source.

    Returns the tuned towers and, per source, a function computing its image
    features through them from the cached bottom maps (None without files). The
    tuned top is cached too (keyed by the training rows, their labels and the
    tuning options), so trying other joint-model options does not re-tune it.
    """
    assert request.tune_tower is not None
    if not isinstance(towers, OfflineTowers):
        raise ValueError("--tune-tower-epochs works with the offline base only")
    maps: list[TowerMaps | None] = [
        None
        if records is None
        else extract_maps(
            towers,
            records,
            views=request.views,
            seed=config.seed,
            records_key=records_key(records),
            stage=request.tune_tower.split_stage,
            cache_dir=request.cache_dir,
            progress=progress,
        )
        for records in all_records
    ]
    rows, labels, identity = _labelled_training_rows(all_records, maps, request, config)
    cache = (
        request.cache_dir / "tops" / f"{_top_key(towers, request, identity)}.safetensors"
        if request.cache_dir
        else None
    )
    original = towers.original_top_at(request.tune_tower.split_stage)
    top = load_cached_top(original, cache) if cache else None
    if top is None:
        log.info("tuning the image tower's top on %d labelled training images", len(rows))
        top = tune_top(original, rows, labels, request.tune_tower, _log_tune_epoch)
        if cache:
            save_state_dict(cache, top.state_dict())
    tuned = towers.with_tuned_top(top)
    return tuned, [None if m is None else _images_from(tuned, m) for m in maps]


def _images_from(towers: OfflineTowers, tower_maps: TowerMaps) -> ImagesFromMaps:
    return lambda: (towers.features_from_maps(tower_maps.maps), tower_maps.has_image)


def _labelled_training_rows(
    all_records: list[list[CatalogRecord] | None],
    maps: list[TowerMaps | None],
    request: BundleRequest,
    config: TrainConfig,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Maps and labels of every labelled training image, and who they are (for the cache key)."""
    rows, labels, identity = [], [], []
    for records, tower_maps in zip(all_records, maps, strict=True):
        if records is None or tower_maps is None:
            continue
        val_ids = _val_ids(records, request, config)
        chosen = [
            i
            for i, r in enumerate(records)
            if r.label and tower_maps.has_image[i] and r.id not in val_ids
        ]
        rows.append(tower_maps.maps[chosen])
        labels += [str(records[i].label) for i in chosen]
        identity += [records_key(records), *(records[i].id for i in chosen)]
    if not labels:
        raise ValueError("no labelled training image to tune the tower on")
    return np.concatenate(rows), labels, identity


def _top_key(towers: OfflineTowers, request: BundleRequest, identity: list[str]) -> str:
    assert request.tune_tower is not None
    payload = [towers.fingerprint, request.views, request.tune_tower.to_dict(), identity]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _log_tune_epoch(epoch: int, loss: float, accuracy: float) -> None:
    log.info("tower tuning epoch %d: loss %.4f, training accuracy %.3f", epoch, loss, accuracy)


def train_bundle(
    request: BundleRequest,
    config: TrainConfig,
    *,
    towers: Towers | None = None,
    progress: ProgressCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train on every source and write the bundle to ``request.out_dir``.

    ``request`` and ``config`` checked themselves when they were made.
    """
    started = time.perf_counter()
    towers = towers if towers is not None else load_towers(request.base, device=request.device)
    all_records = [None if s.dataset == "synthetic" else _read_records(s) for s in request.sources]
    images: list[ImagesFromMaps | None] = [None] * len(all_records)
    base_fingerprint = towers.fingerprint
    tuned_top = None
    if request.tune_tower is not None:
        towers, images = _tuned_towers(towers, all_records, request, config, progress)
        tuned_top = towers.tuned_top
        base_fingerprint = towers.base_fingerprint
    splits = [
        _split_features(towers, s, records, request, config, progress, source_images)
        for s, records, source_images in zip(request.sources, all_records, images, strict=True)
    ]
    joint = JointConfig(
        image_dim=towers.image_dim,
        text_dim=towers.text_dim,
        dim=request.dim,
        hidden=request.hidden,
        metric=check_metric(request.metric),
    )
    result = train_joint([t for t, _ in splits], [v for _, v in splits], joint, config, on_epoch)
    training: dict[str, Any] = {
        "options": config.to_dict(),
        "sources": [
            {
                "dataset": s.dataset,
                "data_dir": str(s.data_dir) if s.data_dir else None,
                "n_train": len(t),
                "n_val": len(v),
                "validation": metrics,
            }
            for s, (t, v), metrics in zip(request.sources, splits, result.validation, strict=True)
        ],
        "val_fraction": request.val_fraction,
        "views": request.views,
        "tune_tower": request.tune_tower.to_dict() if request.tune_tower else None,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": round(time.perf_counter() - started, 1),
    }
    save_bundle(
        request.out_dir,
        result.model,
        base=towers.spec,
        base_fingerprint=base_fingerprint,
        classes=result.classes,
        training=training,
        tuned_top=tuned_top,
        image_tta=request.image_tta,
        image_size=request.image_size,
    )
    return result
