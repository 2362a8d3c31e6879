"""``mmsearch train`` end to end: datasets -> cached features -> split -> train -> bundle.

Each ``(dataset, data_dir)`` source is read, split into train / validation by a
hash of each record's id (:func:`~models.datasets.split_records`, so the split
is stable and independent of file order), turned into tower features once
(cached), and the joint model is trained on all sources together. The bundle
records the options, the split and the validation figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.bundle import save_bundle
from models.datasets import open_dataset, split_records
from models.features import FeatureSet, extract_features
from models.joint import JointConfig
from models.losses import check_metric
from models.synthetic_retrieval import synthetic_feature_sets
from models.towers import Towers, load_towers
from models.train import EpochCallback, TrainConfig, TrainResult, train_joint

log = logging.getLogger(__name__)

TRAIN_DATASETS = ("kfood", "food101", "flickr", "synthetic")
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Source:
    dataset: str
    data_dir: Path | None  # None only for "synthetic"


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


def _split_features(
    towers: Towers,
    source: Source,
    request: BundleRequest,
    config: TrainConfig,
    progress: ProgressCallback | None,
) -> tuple[FeatureSet, FeatureSet]:
    if source.dataset == "synthetic":
        return synthetic_feature_sets(
            towers.image_dim, towers.text_dim, seed=config.seed, val_fraction=request.val_fraction
        )
    if source.data_dir is None:
        raise ValueError(f"--dataset {source.dataset} needs a --data-dir")
    records = list(open_dataset(source.data_dir, source.dataset))
    features = extract_features(
        towers,
        records,
        views=request.views,
        seed=config.seed,
        cache_dir=request.cache_dir,
        progress=progress,
    )
    train, val = split_records(records, request.val_fraction, seed=config.seed)
    val_ids = {r.id for r in val}
    val_idx = [i for i, id_ in enumerate(features.ids) if id_ in val_ids]
    train_idx = [i for i, id_ in enumerate(features.ids) if id_ not in val_ids]
    log.info("%s: %d train / %d validation records", source.dataset, len(train_idx), len(val_idx))
    return features.take(train_idx), features.take(val_idx)


def train_bundle(
    request: BundleRequest,
    config: TrainConfig,
    *,
    towers: Towers | None = None,
    progress: ProgressCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train on every source and write the bundle to ``request.out_dir``."""
    if not request.sources:
        raise ValueError("name at least one --dataset")
    for source in request.sources:
        if source.dataset not in TRAIN_DATASETS:
            raise ValueError(
                f"unknown dataset {source.dataset!r}; expected one of {', '.join(TRAIN_DATASETS)}"
            )
    started = time.perf_counter()
    towers = towers if towers is not None else load_towers(request.base, device=request.device)
    splits = [_split_features(towers, s, request, config, progress) for s in request.sources]
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
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": round(time.perf_counter() - started, 1),
    }
    save_bundle(
        request.out_dir,
        result.model,
        base=towers.spec,
        base_fingerprint=towers.fingerprint,
        classes=result.classes,
        training=training,
    )
    return result
