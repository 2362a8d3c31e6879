"""``mmsearch train-set``: DivE set heads trained on top of a frozen bundle.

The bundle's vectors stay as they are; only the two heads learn: the image head over
a photo's regions and joint vector, the text head over a text's n-gram vectors and
joint vector (captions and recipes alike, as :class:`models.set_encoding.SetEncoder`
serves them). The loss is DivE's contrastive term, here symmetric InfoNCE over the
smooth-Chamfer similarities of a batch of photo and text sets, plus its slot diversity
regulariser (:mod:`training.set_losses`); DivE's other terms are not used.

Protocol (as ``mmsearch train-rerank --flickr-from val-half``): on its own training
split the vector model is nearly perfect (flickr RSUM 586 of 600), so a head fitted
there has nothing to correct. flickr is fitted on one half of the bundle's
validation split (``fit`` and ``tune`` parts) and reported on the other half; kfood
is fitted and tuned on the bundle's kfood training split and reported on its
validation split. The slot count K, the diversity weight and the epoch are chosen
together on the ``tune`` part; the report half is touched once, at the end, with
the chosen heads. Epoch 0 (the untrained heads, equal to the single vector) is one
of the candidates, so the heads chosen never measured worse than single there.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from models.encoders.base import Encoder
from models.set_head import SetHead, SetHeadConfig
from models.set_similarity import DEFAULT_ALPHA, smooth_chamfer_matrix
from training.errors import ConfigError
from training.features import Ragged
from training.rerank_eval import flickr_figures, recalls_of
from training.set_features import PairedSetFeatures, paired_set_features
from training.set_losses import set_contrastive_loss, slot_diversity_loss
from training.train_sgraf import RerankData, flickr_parts, three_parts

Heads = dict[str, SetHead]
EpochCallback = Callable[[dict[str, object]], None]


@dataclass(frozen=True)
class SetTrainConfig:
    slots: tuple[int, ...] = (2, 4)  # candidates, chosen on the tuning part
    diversity_weights: tuple[float, ...] = (0.1, 0.5)  # candidates, likewise
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-4
    temperature: float = 0.05
    alpha: float = DEFAULT_ALPHA
    hidden: int = 256
    iterations: int = 3
    tune_fraction: float = 0.3
    # > 0: the heads' output layer starts random at this std instead of zero. All slots then
    # start apart (cosine < 1), where the diversity term has a gradient; at 0 they start as
    # K copies of the single vector, its maximum, and nothing pulls them apart.
    slot_init_std: float = 0.0
    budget_seconds: float | None = None  # the whole grid's; each candidate gets a share
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.slots or min(self.slots) < 1 or not self.diversity_weights:
            raise ConfigError("give at least one {slots} (each at least 1) and diversity weight")
        if min(self.diversity_weights) < 0:
            raise ConfigError("{diversity_weights} must not be negative")
        if min(self.epochs, self.batch_size, self.hidden, self.iterations) < 1:
            raise ConfigError("{epochs}, {batch_size}, {hidden} and {iterations} must be >= 1")
        if min(self.lr, self.temperature, self.alpha) <= 0:
            raise ConfigError("{lr}, {temperature} and {alpha} must be positive")
        if not 0 < self.tune_fraction < 1:
            raise ConfigError("{tune_fraction} must be in (0, 1)")
        if self.slot_init_std < 0:
            raise ConfigError("{slot_init_std} must not be negative")
        if self.budget_seconds is not None and self.budget_seconds <= 0:
            raise ConfigError("{budget_seconds} must be positive")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Parts:
    """One part (fit, tune or report) of each dataset; kfood may be absent."""

    flickr: PairedSetFeatures
    kfood: PairedSetFeatures | None = None

    def datasets(self) -> list[PairedSetFeatures]:
        return [self.flickr] if self.kfood is None else [self.flickr, self.kfood]


@dataclass
class CandidateResult:
    slots: int
    diversity_weight: float
    heads: Heads
    history: list[dict[str, object]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("-inf")
    stopped_by_budget: bool = False


# --------------------------------------------------------------------------- heads


def new_heads(region_dim: int, dim: int, slots: int, config: SetTrainConfig, seed: int) -> Heads:
    torch.manual_seed(seed)
    sizes = {"slots": slots, "hidden": config.hidden, "iterations": config.iterations}
    heads = {
        "image": SetHead(SetHeadConfig(local_dim=region_dim, dim=dim, **sizes)),
        "text": SetHead(SetHeadConfig(local_dim=dim, dim=dim, **sizes)),
    }
    if config.slot_init_std > 0:
        for head in heads.values():
            nn.init.normal_(head.out.weight, std=config.slot_init_std)
    return heads


def _padded(grams: Ragged, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = [int(grams.offsets[r + 1] - grams.offsets[r]) for r in rows]
    parts = np.zeros((len(rows), max(lengths, default=0), grams.values.shape[1]), np.float32)
    mask = np.zeros(parts.shape[:2], bool)
    for i, (r, n) in enumerate(zip(rows, lengths, strict=True)):
        parts[i, :n], mask[i, :n] = grams.row(r), True
    return torch.from_numpy(parts), torch.from_numpy(mask)


def image_sets(head: SetHead, data: PairedSetFeatures, rows: Sequence[int]) -> torch.Tensor:
    index = np.asarray(rows, dtype=np.int64)
    regions = torch.from_numpy(data.regions[index].astype(np.float32))
    return head(regions, None, torch.from_numpy(data.images[index]))


def text_sets(head: SetHead, data: PairedSetFeatures, rows: Sequence[int]) -> torch.Tensor:
    parts, mask = _padded(data.grams, rows)
    whole = torch.from_numpy(data.texts[np.asarray(rows, dtype=np.int64)])
    return head(parts, mask, whole)


def all_sets(heads: Heads, data: PairedSetFeatures, batch: int = 128) -> tuple[np.ndarray, ...]:
    """(photo sets (n_images, K, dim), text sets (n_texts, K, dim)), inference mode."""
    with torch.inference_mode():
        photos = [
            image_sets(heads["image"], data, range(i, min(i + batch, len(data.images))))
            for i in range(0, len(data.images), batch)
        ]
        texts = [
            text_sets(heads["text"], data, range(i, min(i + batch, len(data.texts))))
            for i in range(0, len(data.texts), batch)
        ]
    return torch.cat(photos).numpy(), torch.cat(texts).numpy()


# --------------------------------------------------------------------------- figures


def _set_similarity(texts: np.ndarray, photos: np.ndarray, alpha: float) -> np.ndarray:
    """(n_texts, n_images) smooth-Chamfer similarities."""
    return smooth_chamfer_matrix(torch.from_numpy(texts), torch.from_numpy(photos), alpha).numpy()


def figures_of(similarity: np.ndarray, owner: np.ndarray, kind: str) -> dict[str, object]:
    """Figures of (n_texts, n_images) scores, text t belonging to photo ``owner[t]``.
    flickr: both directions and RSUM; kfood: image -> recipe and recipe -> image."""
    positive = owner[:, None] == np.arange(similarity.shape[1])[None, :]
    if kind == "flickr":
        return flickr_figures(similarity, similarity.T, positive)
    return {
        "image_to_recipe": recalls_of(similarity.T, positive.T),
        "recipe_to_image": recalls_of(similarity, positive),
    }


def set_similarity(heads: Heads, data: PairedSetFeatures, alpha: float) -> np.ndarray:
    """(n_texts, n_images) smooth-Chamfer similarities of the heads' sets."""
    photos, texts = all_sets(heads, data)
    return _set_similarity(texts, photos, alpha)


def variants(heads: Heads, data: PairedSetFeatures, kind: str, alpha: float) -> dict[str, object]:
    """``single`` and ``set`` figures of one part, on the same cached inputs."""
    return {
        "single": figures_of(data.texts @ data.images.T, data.owner, kind),
        "set": figures_of(set_similarity(heads, data, alpha), data.owner, kind),
    }


def tune_score(heads: Heads, part: Parts, alpha: float) -> dict[str, float]:
    """Set figures of the tuning part; ``score`` is flickr's RSUM plus kfood's image ->
    recipe R@1 + R@5 + R@10 in points, so neither can be traded away unseen."""
    flickr = figures_of(set_similarity(heads, part.flickr, alpha), part.flickr.owner, "flickr")
    out = {"flickr_rsum": float(flickr["rsum"])}  # type: ignore[arg-type]
    if part.kfood is not None:
        kfood = figures_of(set_similarity(heads, part.kfood, alpha), part.kfood.owner, "kfood")
        recalls: dict[str, float] = kfood["image_to_recipe"]  # type: ignore[assignment]
        out["kfood_i2r_r10"] = recalls["R@10"]
        out["kfood_i2r_sum"] = 100 * (recalls["R@1"] + recalls["R@5"] + recalls["R@10"])
    out["score"] = out["flickr_rsum"] + out.get("kfood_i2r_sum", 0.0)
    return out


# --------------------------------------------------------------------------- training


def unique_photo_batches(
    owner: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """The texts in shuffled order, in batches where no two texts share a photo: another
    caption of the same photo would be a false negative of the InfoNCE. Each text goes to
    the first batch with room and without its photo; a batch of one (no negative) is left
    out."""
    batches: list[list[int]] = []
    photos: list[set[int]] = []
    for text in rng.permutation(len(owner)):
        photo = int(owner[text])
        at = next(
            (i for i, b in enumerate(batches) if len(b) < batch_size and photo not in photos[i]),
            None,
        )
        if at is None:
            batches.append([])
            photos.append(set())
            at = len(batches) - 1
        batches[at].append(int(text))
        photos[at].add(photo)
    return [np.asarray(b) for b in batches if len(b) > 1]


def batch_loss(
    heads: Heads, data: PairedSetFeatures, texts: np.ndarray, weight: float, config: SetTrainConfig
) -> torch.Tensor:
    photos = image_sets(heads["image"], data, data.owner[texts].tolist())
    captions = text_sets(heads["text"], data, texts.tolist())
    contrastive = set_contrastive_loss(photos, captions, config.temperature, config.alpha)
    diversity = 0.5 * (slot_diversity_loss(photos) + slot_diversity_loss(captions))
    return contrastive + weight * diversity


def train_candidate(
    fit: Parts,
    tune: Parts,
    slots: int,
    weight: float,
    config: SetTrainConfig,
    budget_seconds: float | None,
    on_epoch: EpochCallback | None = None,
) -> CandidateResult:
    """Heads with ``slots`` slots trained at diversity ``weight``; the epoch the tuning
    part scores best is kept (epoch 0: untrained, the single vector)."""
    region_dim, dim = fit.flickr.regions.shape[2], fit.flickr.images.shape[1]
    heads = new_heads(region_dim, dim, slots, config, config.seed)
    params = [p for head in heads.values() for p in head.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    rng = np.random.default_rng(config.seed)
    result = CandidateResult(slots, weight, copy.deepcopy(heads))
    started = time.perf_counter()
    for epoch in range(config.epochs + 1):
        losses = [] if epoch == 0 else _epoch(heads, optimizer, fit, weight, config, rng)
        for head in heads.values():
            head.eval()
        entry: dict[str, object] = {"epoch": epoch, **tune_score(heads, tune, config.alpha)}
        if losses:
            entry["loss"] = float(np.mean(losses))
        result.history.append(entry)
        if on_epoch is not None:
            on_epoch({"slots": slots, "diversity_weight": weight, **entry})
        if float(entry["score"]) > result.best_score:  # type: ignore[arg-type]
            result.best_score, result.best_epoch = float(entry["score"]), epoch  # type: ignore[arg-type]
            result.heads = copy.deepcopy(heads)
        if budget_seconds is not None and time.perf_counter() - started > budget_seconds:
            result.stopped_by_budget = epoch < config.epochs
            break
    return result


def _epoch(
    heads: Heads,
    optimizer: torch.optim.Optimizer,
    fit: Parts,
    weight: float,
    config: SetTrainConfig,
    rng: np.random.Generator,
) -> list[float]:
    for head in heads.values():
        head.train()
    batches = [
        (data, texts)
        for data in fit.datasets()
        for texts in unique_photo_batches(data.owner, config.batch_size, rng)
    ]
    losses = []
    for i in rng.permutation(len(batches)):
        data, texts = batches[int(i)]
        loss = batch_loss(heads, data, texts, weight, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def choose_heads(
    fit: Parts, tune: Parts, config: SetTrainConfig, on_epoch: EpochCallback | None = None
) -> tuple[CandidateResult, list[CandidateResult]]:
    """Every (K, diversity weight) candidate trained; the one best on ``tune`` first."""
    grid = list(itertools.product(config.slots, config.diversity_weights))
    share = None if config.budget_seconds is None else config.budget_seconds / len(grid)
    results = [
        train_candidate(fit, tune, slots, weight, config, share, on_epoch) for slots, weight in grid
    ]
    return max(results, key=lambda r: r.best_score), results


# --------------------------------------------------------------------------- datasets


def _rows(ids: Sequence[str], wanted: set[str]) -> list[int]:
    return [i for i, record_id in enumerate(ids) if record_id in wanted]


def dataset_parts(
    encoder: Encoder, data: RerankData, tune_fraction: float
) -> tuple[Parts, Parts, Parts]:
    """The fit, tune and report parts (see the module docstring), features cached."""
    flickr_ids = [r.id for r in data.flickr]
    used = {
        flickr_ids[row] for part in flickr_parts(flickr_ids, data, tune_fraction) for row in part
    }
    flickr = paired_set_features(
        encoder, "flickr", [r for r in data.flickr if r.id in used], data.cache_dir
    )
    split = flickr_parts(flickr.ids, data, tune_fraction)
    kfood_split: list[PairedSetFeatures | None] = [None, None, None]
    if data.kfood:
        kfood = paired_set_features(encoder, "kfood", data.kfood, data.cache_dir)
        kfood_split = [
            kfood.take(rows) for rows in three_parts(kfood.ids, data.kfood, data, tune_fraction)
        ]
    fit, tune, report = (
        Parts(flickr.take(rows), part) for rows, part in zip(split, kfood_split, strict=True)
    )
    return fit, tune, report


def train_set_heads(
    encoder: Encoder,
    data: RerankData,
    config: SetTrainConfig,
    on_epoch: EpochCallback | None = None,
) -> tuple[Heads, dict[str, object]]:
    """The chosen heads and a report: the grid's tuning history, the choice, and single
    against set on the report parts."""
    fit, tune, report = dataset_parts(encoder, data, config.tune_fraction)
    if min(len(fit.flickr.images), len(tune.flickr.images), len(report.flickr.images)) < 2:
        raise ValueError(
            f"too few photos: fit {len(fit.flickr.images)}, tune {len(tune.flickr.images)}, "
            f"report {len(report.flickr.images)} (each needs at least 2)"
        )
    started = time.perf_counter()
    chosen, results = choose_heads(fit, tune, config, on_epoch)
    figures: dict[str, object] = {
        "flickr": variants(chosen.heads, report.flickr, "flickr", config.alpha)
    }
    if report.kfood is not None and len(report.kfood.images) > 1:
        figures["kfood"] = variants(chosen.heads, report.kfood, "kfood", config.alpha)
    return chosen.heads, {
        "config": config.to_dict(),
        "flickr_from": data.flickr_from,
        "photos": {
            name: _counts(part) for name, part in (("fit", fit), ("tune", tune), ("report", report))
        },
        "grid": [
            {
                "slots": r.slots,
                "diversity_weight": r.diversity_weight,
                "best_epoch": r.best_epoch,
                "best_score": r.best_score,
                "stopped_by_budget": r.stopped_by_budget,
                "history": r.history,
            }
            for r in results
        ],
        "chosen": {
            "slots": chosen.slots,
            "diversity_weight": chosen.diversity_weight,
            "epoch": chosen.best_epoch,
            "untrained": chosen.best_epoch == 0,
        },
        "seconds": round(time.perf_counter() - started, 1),
        "report": figures,
    }


def _counts(part: Parts) -> dict[str, int]:
    counts = {"flickr": len(part.flickr.images)}
    if part.kfood is not None:
        counts["kfood"] = len(part.kfood.images)
    return counts
