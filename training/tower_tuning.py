"""Fine-tuning the top of the offline image tower on cached intermediate maps.

Frozen EfficientNet-Lite0 features cap what a head on top can do: on our
food101 validation split, nearest-prototype top-1 stays near 0.80 however the
heads are trained. Fine-tuning the whole network on two CPU cores is out of
reach, but its last stages are cheap: the network is cut after stage
``SPLIT_STAGE`` (112 channels at 14 x 14 for a 224 input), the frozen bottom
runs once per image view and its maps are cached, and only the top (stages 5-6,
the 1x1 head conv and its batch norm, about 35 % of the compute) is trained,
epoch after epoch, on those maps.

The top is trained as a classifier (cross-entropy with label smoothing over the
labelled training records: food101 labels, kfood cuisines) with the batch-norm
statistics frozen (small batches of one domain would drift them). Its pooled
output replaces the frozen pooled features; the ConSE half of the image feature
still comes from the *original* top, so it stays a calibrated ImageNet reading.

The cut itself and the top as inference runs it live in :mod:`models.vision_top`.
A tuned top travels inside the bundle (``tower.safetensors``) and
:class:`~models.towers.OfflineTowers` applies it; its hash is part of the
towers' fingerprint.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.files import atomic_write
from models.images import load_record_images
from models.types import CatalogRecord, ProgressCallback
from models.vision_top import SPLIT_STAGE, SPLIT_STAGES, VisionTop
from training.errors import ConfigError

log = logging.getLogger(__name__)

MAPS_VERSION = 1


# --------------------------------------------------------------------------- map cache


class MapSource(Protocol):
    """What :func:`extract_maps` needs of the (untuned) offline towers."""

    @property
    def fingerprint(self) -> str: ...

    def bottom_maps(
        self, images: Sequence[Any], views: int, seed: int, stage: int
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class TowerMaps:
    """Bottom maps of ``len(ids)`` records: (n, views, 112, 14, 14) float16."""

    ids: list[str]
    maps: np.ndarray
    has_image: np.ndarray  # (n,) bool; maps are zero where False


def _maps_path(
    cache_dir: Path, fingerprint: str, records_key: str, views: int, seed: int, stage: int
) -> Path:
    # The seed picks the augmented views (see training.features.cache_path).
    name = f"{fingerprint}-{records_key}-v{views}-seed{seed}-s{stage}-m{MAPS_VERSION}.npz"
    return cache_dir / "maps" / name


def extract_maps(
    towers: MapSource,
    records: Sequence[CatalogRecord],
    *,
    views: int,
    seed: int,
    records_key: str,
    stage: int = SPLIT_STAGE,
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    batch_size: int = 32,
) -> TowerMaps:
    """Bottom maps of every record's image: view 0 evaluation transform, then augmentations.

    The augmentations are seeded exactly as in
    :meth:`~models.towers.OfflineTowers.augmented_image_features` (seed + batch
    start), so maps pushed through a top equal what the towers compute directly.
    """
    path = (
        _maps_path(cache_dir, towers.fingerprint, records_key, views, seed, stage)
        if cache_dir
        else None
    )
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return TowerMaps([str(x) for x in data["ids"]], data["maps"], data["has_image"])
    n = len(records)
    maps: np.ndarray | None = None
    has = np.zeros(n, dtype=bool)
    for start in range(0, n, batch_size):
        idx, images = load_record_images(records, start, batch_size)
        if images:
            chunk = towers.bottom_maps(images, views, seed + start, stage)
            if maps is None:
                maps = np.zeros((n, views, *chunk.shape[2:]), dtype=np.float16)
            maps[idx] = chunk
            has[idx] = True
        if progress is not None:
            progress(min(n, start + batch_size), n)
    if maps is None:
        raise ValueError("no readable image among the records: nothing to tune the tower on")
    result = TowerMaps([r.id for r in records], maps, has)
    if path is not None:
        arrays = {"ids": np.asarray(result.ids).astype(str), "maps": maps, "has_image": has}
        atomic_write(path, lambda fp: np.savez(fp, **arrays))  # type: ignore[arg-type]
    return result


# --------------------------------------------------------------------------- tuning


@dataclass(frozen=True)
class TuneConfig:
    epochs: int = 6
    lr: float = 3e-4
    head_lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    seed: int = 0
    split_stage: int = SPLIT_STAGE  # the first stage that is trained
    # Regularisers against the top memorising its training photos (it reaches 0.99
    # training accuracy at 0.84 validation): mixup of the cached maps (Beta(a, a)
    # mixing weights, "manifold mixup" at the cut; 0 = off) and stochastic depth on
    # the residual blocks of the top (probability of dropping a block's branch).
    mixup: float = 0.0
    drop_path: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("{epochs} and {batch_size} must be at least 1")
        if self.lr <= 0:
            raise ConfigError("{lr} must be positive")
        if self.head_lr <= 0:
            raise ConfigError("{head_lr} must be positive")
        if self.mixup < 0:
            raise ConfigError("{mixup} cannot be negative")
        if self.split_stage not in SPLIT_STAGES:
            raise ConfigError(f"{{split_stage}} must be one of {SPLIT_STAGES}")
        if not 0.0 <= self.drop_path < 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("{drop_path} and {label_smoothing} must be in [0, 1)")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _freeze_batch_norm(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


@contextmanager
def _stochastic_depth(top: VisionTop, rate: float) -> Iterator[None]:
    """Drop the residual branches of ``top``'s blocks with probability ``rate`` while inside.

    timm builds its blocks with ``drop_path = Identity`` when loaded for inference;
    the swap holds no weights, so the saved state dict is unchanged.
    """
    from timm.layers import DropPath

    blocks = [
        b for b in top.blocks.modules() if isinstance(getattr(b, "drop_path", None), nn.Module)
    ]
    originals = [b.drop_path for b in blocks]
    try:
        if rate > 0:
            for block in blocks:
                block.drop_path = DropPath(rate)
        yield
    finally:
        for block, original in zip(blocks, originals, strict=True):
            block.drop_path = original


def _mixed(
    batch: torch.Tensor, targets: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup: the batch blended with a shuffled copy; both targets and the blend weight."""
    if alpha <= 0:
        return batch, targets, targets, 1.0
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = torch.randperm(len(batch), generator=generator)
    return lam * batch + (1 - lam) * batch[partner], targets, targets[partner], lam


def tune_top(
    top: VisionTop,
    maps: np.ndarray,
    labels: Sequence[str],
    config: TuneConfig,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> VisionTop:
    """Train ``top`` (a copy) as a classifier over ``labels`` on random views of ``maps``.

    ``maps`` is (n, views, C, H, W); each epoch sees every record once under a
    random view. ``on_epoch(epoch, mean loss, training accuracy)`` follows progress.
    """
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ValueError("tuning the tower needs labelled records of at least two classes")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    tuned = copy.deepcopy(top)
    classifier = nn.Linear(_pooled_dim(tuned), len(classes))
    targets = torch.tensor([classes.index(label) for label in labels])
    optimizer = torch.optim.AdamW(
        [
            {"params": tuned.parameters(), "lr": config.lr},
            {"params": classifier.parameters(), "lr": config.head_lr},
        ],
        weight_decay=config.weight_decay,
    )
    n, views = maps.shape[0], maps.shape[1]
    steps = config.epochs * -(-n // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[config.lr, config.head_lr], total_steps=max(1, steps), pct_start=0.1
    )
    with _stochastic_depth(tuned, config.drop_path):
        for epoch in range(1, config.epochs + 1):
            tuned.train()
            _freeze_batch_norm(tuned)
            order = torch.randperm(n, generator=generator)
            view = torch.randint(0, views, (n,), generator=generator)
            total, correct = 0.0, 0.0
            for start in range(0, n, config.batch_size):
                rows = order[start : start + config.batch_size]
                batch = torch.from_numpy(maps[rows.numpy(), view[rows].numpy()]).float()
                batch, first, second, lam = _mixed(batch, targets[rows], config.mixup, generator)
                logits = classifier(tuned(batch))
                smoothing = config.label_smoothing
                loss = lam * F.cross_entropy(logits, first, label_smoothing=smoothing) + (
                    1 - lam
                ) * F.cross_entropy(logits, second, label_smoothing=smoothing)
                hits = logits.argmax(1)
                correct += lam * float((hits == first).sum()) + (1 - lam) * float(
                    (hits == second).sum()
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach()) * len(rows)
            if on_epoch is not None:
                on_epoch(epoch, total / n, correct / n)
    return tuned.eval()


def _pooled_dim(top: VisionTop) -> int:
    return int(top.conv_head.out_channels)


def load_cached_top(original: VisionTop, path: Path) -> VisionTop | None:
    """A copy of ``original`` with the weights saved at ``path``; None if absent or unfit."""
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    top = copy.deepcopy(original)
    try:
        top.load_state_dict(load_file(str(path)), strict=True)
    except (OSError, RuntimeError, ValueError) as exc:
        log.warning("ignoring unreadable tuned-top cache %s (%s)", path, exc)
        return None
    log.info("tuned image-tower top from cache %s", path)
    return top.eval()
