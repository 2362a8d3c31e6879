"""Training the joint model on cached tower features.

One step takes a batch from one dataset (batches of different datasets are
interleaved, so every batch is a coherent retrieval problem) and adds up:

- symmetric InfoNCE with a learnable temperature between every pair of
  modalities the batch has (image-recipe, text-image, text-recipe); pairs that
  share a text (food101 class names, repeated titles) are positives of each
  other, not negatives (:func:`~training.losses.grouped_info_nce`);
- optionally VSE++'s bidirectional triplet loss with the hardest in-batch
  negative on image-recipe pairs (``triplet_weight``; ``infonce_weight`` 0
  leaves the triplet loss alone);
- semantic regularisation: one classifier shared by image and recipe vectors
  (``semantic_weight``; classes = cuisine / food101 label);
- fusion: a random non-empty subset of each item's modalities is fused and
  matched against the item's single-modality vectors (``fusion_weight``).

Augmentation: a random cached view of each image (crops, flips, colour),
random dropping of ingredients and steps, a random caption among several.
Early stopping on the validation split's mean Recall@{1,5,10}; the best epoch's
weights are kept. Everything is seeded.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from models.fusion import random_modality_masks
from models.joint import JointConfig, JointModel, RecipeBatch, pad_recipes
from training.errors import ConfigError
from training.evaluate import ranks_of_positives, recall_summary
from training.features import FeatureSet
from training.losses import (
    LearnableTemperature,
    SemanticRegularizer,
    grouped_info_nce,
    info_nce,
    triplet_ranking,
)

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, float, float | None], None]  # epoch, train loss, val score


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.07
    infonce_weight: float = 1.0
    triplet_weight: float = 0.0
    margin: float = 0.2
    semantic_weight: float = 0.05
    fusion_weight: float = 0.25
    drop_parts: float = 0.15
    patience: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("{epochs} must be at least 1 and {batch_size} at least 2")
        if self.lr <= 0 or self.temperature <= 0:
            raise ConfigError("{lr} and {temperature} must be positive")
        if self.infonce_weight < 0 or self.triplet_weight < 0 or self.semantic_weight < 0:
            raise ConfigError("loss weights cannot be negative")
        if self.infonce_weight == 0 and self.triplet_weight == 0:
            raise ConfigError("{infonce_weight} and {triplet_weight} cannot both be 0")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class TrainResult:
    model: JointModel
    classes: list[str]
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    # One entry per validation set, in order: direction -> Recall@K / medR.
    validation: list[dict[str, dict[str, float]]] = field(default_factory=list)


# --------------------------------------------------------------------------- batches


@dataclass
class Batch:
    images: torch.Tensor | None  # (b, image_dim) for rows with an image
    image_rows: torch.Tensor  # (b,) bool
    texts: torch.Tensor | None
    text_rows: torch.Tensor
    text_groups: torch.Tensor  # (b,) rows with the same text share a group
    recipes: RecipeBatch | None
    recipe_rows: torch.Tensor
    labels: torch.Tensor  # (b,) class index or -1


def _random_subset(rows: np.ndarray, rng: np.random.Generator, drop: float) -> np.ndarray:
    if len(rows) <= 1 or drop <= 0:
        return rows
    keep = rng.random(len(rows)) >= drop
    if not keep.any():
        keep[rng.integers(len(rows))] = True
    return rows[keep]


def make_batch(
    fs: FeatureSet,
    idx: np.ndarray,
    rng: np.random.Generator,
    class_index: dict[str, int],
    *,
    augment: bool,
    drop_parts: float = 0.0,
) -> Batch:
    views = fs.images.shape[1]
    view = rng.integers(views, size=len(idx)) if augment else np.zeros(len(idx), dtype=np.int64)
    image_rows = fs.has_image[idx]
    query_lengths = fs.queries.lengths()[idx]
    text_rows = query_lengths > 0
    picks = [
        fs.queries.row(int(i))[rng.integers(n) if augment else 0]
        for i, n in zip(idx, query_lengths, strict=True)
        if n > 0
    ]
    texts = torch.from_numpy(np.stack(picks)) if picks else None
    groups = torch.unique(texts, dim=0, return_inverse=True)[1] if texts is not None else None
    recipe_rows = fs.has_recipe[idx]
    recipes = None
    if recipe_rows.any():
        chosen = idx[recipe_rows]
        drop = drop_parts if augment else 0.0
        recipes = pad_recipes(
            [torch.from_numpy(fs.titles[i]) for i in chosen],
            [
                torch.from_numpy(_random_subset(fs.ingredients.row(int(i)), rng, drop))
                for i in chosen
            ],
            [
                torch.from_numpy(_random_subset(fs.instructions.row(int(i)), rng, drop))
                for i in chosen
            ],
        )
    labels = [class_index.get(fs.labels[i] or "", -1) for i in idx]
    return Batch(
        images=torch.from_numpy(fs.images[idx[image_rows], view[image_rows]])
        if image_rows.any()
        else None,
        image_rows=torch.from_numpy(image_rows),
        texts=texts,
        text_rows=torch.from_numpy(text_rows),
        text_groups=groups if groups is not None else torch.zeros(0, dtype=torch.int64),
        recipes=recipes,
        recipe_rows=torch.from_numpy(recipe_rows),
        labels=torch.tensor(labels, dtype=torch.int64),
    )


def _scatter(values: torch.Tensor | None, rows: torch.Tensor, dim: int) -> torch.Tensor | None:
    """(b, dim) tensor with ``values`` at ``rows`` and zeros elsewhere (None if no rows)."""
    if values is None:
        return None
    out = values.new_zeros((rows.shape[0], dim))
    out[rows] = values
    return out


# --------------------------------------------------------------------------- losses


class Objective(torch.nn.Module):
    """All training losses of one batch (see the module docstring)."""

    def __init__(self, model: JointModel, config: TrainConfig, n_classes: int):
        super().__init__()
        self.model = model
        self.config = config
        self.temperature = LearnableTemperature(config.temperature)
        self.semantic = (
            SemanticRegularizer(model.config.dim, n_classes, config.semantic_weight)
            if n_classes > 1 and config.semantic_weight > 0
            else None
        )

    def forward(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        m, dim = self.model, self.model.config.dim
        img = (
            _scatter(m.embed_images(batch.images), batch.image_rows, dim)
            if batch.images is not None
            else None
        )
        txt = (
            _scatter(m.embed_texts(batch.texts), batch.text_rows, dim)
            if batch.texts is not None
            else None
        )
        rec = (
            _scatter(m.embed_recipes(batch.recipes), batch.recipe_rows, dim)
            if batch.recipes is not None
            else None
        )
        groups = torch.full((batch.labels.shape[0],), -1, dtype=torch.int64)
        groups[batch.text_rows] = batch.text_groups
        # Rows without a text get their own group so grouping never merges them.
        groups = torch.where(groups >= 0, groups, -1 - torch.arange(len(groups)))
        parts = {
            "image": (img, batch.image_rows),
            "text": (txt, batch.text_rows),
            "recipe": (rec, batch.recipe_rows),
        }
        losses = self._pair_losses(parts, groups)
        if self.semantic is not None:
            losses.append(self._semantic(parts, batch.labels))
        if self.config.fusion_weight > 0:
            fusion = self._fusion(parts, generator)
            if fusion is not None:
                losses.append(self.config.fusion_weight * fusion)
        if not losses:
            raise ValueError("a batch without any pair of modalities cannot be trained on")
        return torch.stack(losses).sum()

    def _pair_losses(self, parts: dict, groups: torch.Tensor) -> list[torch.Tensor]:
        tau, metric = self.temperature(), self.model.config.metric
        losses = []
        for a_name, b_name in (("image", "recipe"), ("text", "image"), ("text", "recipe")):
            (a, a_rows), (b, b_rows) = parts[a_name], parts[b_name]
            if a is None or b is None:
                continue
            rows = a_rows & b_rows
            if int(rows.sum()) < 2:
                continue
            if self.config.infonce_weight > 0:
                infonce = grouped_info_nce(a[rows], b[rows], groups[rows], tau, metric)
                losses.append(self.config.infonce_weight * infonce)
            if self.config.triplet_weight > 0 and a_name == "image":
                losses.append(
                    self.config.triplet_weight
                    * triplet_ranking(
                        a[rows], b[rows], self.config.margin, self.model.config.metric
                    )
                )
        return losses

    def _semantic(self, parts: dict, labels: torch.Tensor) -> torch.Tensor:
        assert self.semantic is not None
        embeddings = []
        for name in ("image", "recipe"):
            vectors, rows = parts[name]
            if vectors is not None:
                keep = rows & (labels >= 0)
                if keep.any():
                    embeddings.append((vectors[keep], labels[keep]))
        if not embeddings:
            return torch.zeros(())
        losses = [F.cross_entropy(self.semantic.head(e), y) for e, y in embeddings]
        return self.semantic.weight * torch.stack(losses).mean()

    def _fusion(self, parts: dict, generator: torch.Generator) -> torch.Tensor | None:
        vectors = [parts[name][0] for name in ("image", "text", "recipe")]
        available = torch.stack([parts[name][1] for name in ("image", "text", "recipe")], dim=1)
        rows = available.sum(1) >= 2
        if int(rows.sum()) < 2:
            return None
        masks = random_modality_masks(int(rows.sum()), 3, generator) & available[rows]
        empty = ~masks.any(dim=1)
        masks[empty] = available[rows][empty]
        inputs = [v[rows] if v is not None else None for v in vectors]
        present_inputs = [x if bool(masks[:, i].any()) else None for i, x in enumerate(inputs)]
        fused = self.model.fuse(present_inputs, masks)
        tau = self.temperature()
        targets = [
            info_nce(fused[avail], v[avail].detach(), tau, self.model.config.metric)
            for v, avail in zip(inputs, available[rows].T, strict=True)
            if v is not None and int(avail.sum()) >= 2
        ]
        return torch.stack(targets).mean() if targets else None


# --------------------------------------------------------------------------- validation


@torch.no_grad()
def embed_feature_set(model: JointModel, fs: FeatureSet) -> dict[str, np.ndarray]:
    """Joint vectors of the first view / first query / full recipe of every record."""
    model.eval()
    batch = make_batch(fs, np.arange(len(fs)), np.random.default_rng(0), {}, augment=False)
    out: dict[str, np.ndarray] = {}
    if batch.images is not None:
        out["image"] = model.embed_images(batch.images).numpy()
    if batch.texts is not None:
        out["text"] = model.embed_texts(batch.texts).numpy()
        out["groups.text"] = batch.text_groups.numpy()  # rows sharing one text (class names)
    if batch.recipes is not None:
        out["recipe"] = model.embed_recipes(batch.recipes).numpy()
    out["rows.image"] = batch.image_rows.numpy()
    out["rows.text"] = batch.text_rows.numpy()
    out["rows.recipe"] = batch.recipe_rows.numpy()
    return out


def validation_metrics(model: JointModel, fs: FeatureSet) -> dict[str, dict[str, float]]:
    """Recall@K for each direction between modalities every validation row has."""
    vectors = embed_feature_set(model, fs)
    metrics: dict[str, dict[str, float]] = {}
    for a, b in (
        ("image", "recipe"),
        ("recipe", "image"),
        ("text", "image"),
        ("image", "text"),
        ("text", "recipe"),
    ):
        if a not in vectors or b not in vectors:
            continue
        both = vectors[f"rows.{a}"] & vectors[f"rows.{b}"]
        if both.sum() < 2:
            continue
        a_vecs = vectors[a][(np.cumsum(vectors[f"rows.{a}"]) - 1)[both]]
        b_vecs = vectors[b][(np.cumsum(vectors[f"rows.{b}"]) - 1)[both]]
        groups = np.arange(int(both.sum()))
        if "text" in (a, b):
            groups = vectors["groups.text"][(np.cumsum(vectors["rows.text"]) - 1)[both]]
        positive = groups[:, None] == groups[None, :]
        metrics[f"{a}_to_{b}"] = recall_summary(ranks_of_positives(a_vecs @ b_vecs.T, positive))
    return metrics


def selection_score(metrics: dict[str, dict[str, float]]) -> float:
    """Mean of R@1, R@5, R@10 over every direction measured."""
    values = [d[f"R@{k}"] for d in metrics.values() for k in (1, 5, 10)]
    return float(np.mean(values)) if values else math.nan


# --------------------------------------------------------------------------- loop


def _epoch_batches(
    sets: Sequence[FeatureSet], batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[int, np.ndarray]]:
    """Shuffled batches of every set, interleaved; a last batch of fewer than 2 is dropped."""
    plan: list[tuple[int, np.ndarray]] = []
    for s, fs in enumerate(sets):
        order = rng.permutation(len(fs))
        n_batches = max(1, round(len(fs) / batch_size))
        plan += [(s, chunk) for chunk in np.array_split(order, n_batches) if len(chunk) >= 2]
    for k in rng.permutation(len(plan)):
        yield plan[k]


def collect_classes(sets: Sequence[FeatureSet]) -> list[str]:
    return sorted({label for fs in sets for label in fs.labels if label})


def train_joint(
    train_sets: Sequence[FeatureSet],
    val_sets: Sequence[FeatureSet],
    joint_config: JointConfig,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train a :class:`JointModel`; early-stops on the validation sets when there are any."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    classes = collect_classes(train_sets)
    class_index = {c: i for i, c in enumerate(classes)}
    model = JointModel(joint_config)
    objective = Objective(model, config, len(classes))
    optimizer = torch.optim.AdamW(
        objective.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps = config.epochs * sum(max(1, round(len(fs) / config.batch_size)) for fs in train_sets)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(1, steps), pct_start=0.1
    )
    if len(val_sets) not in (0, len(train_sets)):
        raise ValueError("give one validation set per training set, or none")
    best = (-math.inf, 0, copy.deepcopy(model.state_dict()))
    history: list[dict[str, float]] = []
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        losses = []
        for s, idx in _epoch_batches(train_sets, config.batch_size, rng):
            batch = make_batch(
                train_sets[s], idx, rng, class_index, augment=True, drop_parts=config.drop_parts
            )
            loss = objective(batch, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        score = _validate(model, val_sets)
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "val": score if score is not None else math.nan,
            }
        )
        if on_epoch is not None:
            on_epoch(epoch, float(np.mean(losses)), score)
        if score is None or score > best[0]:
            best = (
                score if score is not None else -math.inf,
                epoch,
                copy.deepcopy(model.state_dict()),
            )
        elif epoch - best[1] >= config.patience:
            log.info("early stop at epoch %d (best %d)", epoch, best[1])
            break
    model.load_state_dict(best[2])
    model.eval()
    validation = [validation_metrics(model, fs) if len(fs) >= 2 else {} for fs in val_sets]
    return TrainResult(model, classes, best[1] if val_sets else epoch, epoch, history, validation)


def _validate(model: JointModel, val_sets: Sequence[FeatureSet]) -> float | None:
    scores = [selection_score(validation_metrics(model, fs)) for fs in val_sets if len(fs) >= 2]
    scores = [s for s in scores if not math.isnan(s)]
    return float(np.mean(scores)) if scores else None
