"""Training SGRAF as a re-ranker: on the vector model's hard negatives, not in-batch pairs.

Scoring every caption against every region set of a batch (B x B passes over 49
regions) cost 4.9 s a step on this machine (``scripts/sgraf_feasibility.py``). A
re-ranker only ever sees the vector search's top candidates, so it is trained on
exactly those: for each query, the ``negatives`` best-scored wrong candidates of
the vector model plus the right one, with a softmax cross-entropy over them. The
inputs are what serving gives it (:mod:`training.rerank_features`): a caption's
n-grams and vector against photo rows; a kfood photo against recipe vectors.

Epochs are chosen on a held-out part of the training split (``tune_fraction``):
after every epoch the re-ranked figures there are measured and the best weights
kept. The bundle's own validation split is left for the report. A wall-clock
``budget_seconds`` stops training between steps.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.datasets import split_records
from models.encoders.base import Encoder
from models.sgraf import Sgraf, SgrafConfig, SgrafReranker
from models.types import CatalogRecord
from training.errors import ConfigError
from training.evaluate import encode_images, readable_images
from training.rerank_eval import flickr_variants, paired_recalls
from training.rerank_features import CaptionedVectors, captioned_vectors

log = logging.getLogger(__name__)

FLICKR_FROM = ("train", "val-half")


@dataclass(frozen=True)
class RerankTrainConfig:
    negatives: int = 15  # the vector model's best wrong candidates per query
    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-3
    # As the vector model trains (0.07): with vector_scale 1 the vector order enters the
    # softmax as sharply as it did there, and SGRAF's (0, 1) score can outweigh it.
    temperature: float = 0.07
    sim_dim: int = 32
    steps: int = 2
    vector_scale: float = 1.0  # see SgrafConfig.vector_scale
    tune_fraction: float = 0.15
    tune_top: int = 20  # the re-ranked top measured on the tuning part
    budget_seconds: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.negatives < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("{negatives}, {epochs} and {batch_size} must be at least 1")
        if self.lr <= 0 or self.temperature <= 0:
            raise ConfigError("{lr} and {temperature} must be positive")
        if not 0 < self.tune_fraction < 1:
            raise ConfigError("{tune_fraction} must be in (0, 1)")
        if self.budget_seconds is not None and self.budget_seconds <= 0:
            raise ConfigError("{budget_seconds} must be positive")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class PairedVectors:
    """Row i of ``queries`` matches row i of ``candidates`` (kfood: photo -> recipe)."""

    queries: np.ndarray
    candidates: np.ndarray

    def take(self, rows: Sequence[int]) -> PairedVectors:
        index = np.asarray(rows, dtype=np.int64)
        return PairedVectors(self.queries[index], self.candidates[index])


@dataclass(frozen=True)
class RankingExample:
    """One query, its candidates (rows of a pool) and which of them is right."""

    query_parts: torch.Tensor  # (Lq, dim)
    query_whole: torch.Tensor  # (dim,)
    pool: str
    candidates: torch.Tensor  # (negatives + 1,) rows of the pool
    label: int


@dataclass
class RerankTrainResult:
    model: Sgraf
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    stopped_by_budget: bool = False


def hard_candidates(similarity: np.ndarray, right: np.ndarray, negatives: int) -> np.ndarray:
    """(queries, negatives + 1): each query's right candidate and its ``negatives`` best
    wrong ones by the vector score, right one first (the loss is order-blind)."""
    masked = similarity.copy()
    masked[np.arange(len(right)), right] = -np.inf
    # Never past the wrong ones: the masked right one would come back as a "negative".
    wrong = np.argsort(-masked, axis=1, kind="stable")[:, : min(negatives, masked.shape[1] - 1)]
    return np.concatenate([right[:, None], wrong], axis=1)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def caption_examples(vectors: CaptionedVectors, negatives: int) -> list[RankingExample]:
    rows = hard_candidates(vectors.texts @ vectors.images.T, vectors.owner, negatives)
    return [
        RankingExample(
            _tensor(vectors.grams.row(c)),
            _tensor(vectors.texts[c]),
            "photos",
            torch.from_numpy(r),
            0,
        )
        for c, r in enumerate(rows)
    ]


def paired_examples(pairs: PairedVectors, negatives: int) -> list[RankingExample]:
    right = np.arange(len(pairs.queries))
    rows = hard_candidates(pairs.queries @ pairs.candidates.T, right, negatives)
    return [
        RankingExample(
            _tensor(pairs.queries[i : i + 1]),
            _tensor(pairs.queries[i]),
            "recipes",
            torch.from_numpy(r),
            0,
        )
        for i, r in enumerate(rows)
    ]


def example_loss(
    model: Sgraf, example: RankingExample, pools: dict[str, torch.Tensor], temperature: float
) -> torch.Tensor:
    candidates = pools[example.pool][example.candidates]  # (k, dim)
    scores = model(example.query_parts, example.query_whole, candidates[:, None], None, candidates)
    return F.cross_entropy((scores / temperature)[None], torch.tensor([example.label]))


def tune_figures(
    reranker: SgrafReranker,
    flickr: CaptionedVectors,
    kfood: PairedVectors | None,
    top: int,
) -> dict[str, float]:
    """Re-ranked figures on the tuning part; ``score`` is what epochs are chosen by."""
    variants = flickr_variants(flickr, reranker, top)
    figures = {
        "flickr_rsum": float(variants["single+rerank"]["rsum"]),  # type: ignore[arg-type]
        "flickr_rsum_single": float(variants["single"]["rsum"]),  # type: ignore[arg-type]
    }
    if kfood is not None:
        recalls = paired_recalls(kfood.queries, kfood.candidates, reranker, top)
        figures["kfood_image_to_recipe_r10"] = recalls["R@10"]
        figures["kfood_image_to_recipe_r1"] = recalls["R@1"]
    # kfood counts as its R@1 in points beside flickr's RSUM, so it cannot be traded away.
    figures["score"] = figures["flickr_rsum"] + 100 * figures.get("kfood_image_to_recipe_r1", 0)
    return figures


def train_sgraf(
    examples: list[RankingExample],
    pools: dict[str, np.ndarray],
    tune: Callable[[SgrafReranker], dict[str, float]],
    dim: int,
    config: RerankTrainConfig,
) -> RerankTrainResult:
    """SGRAF trained on ``examples``; the weights of the epoch ``tune`` scored best."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = Sgraf(
        SgrafConfig(
            dim=dim, sim_dim=config.sim_dim, steps=config.steps, vector_scale=config.vector_scale
        )
    )
    tensors = {name: _tensor(vectors) for name, vectors in pools.items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    started = time.perf_counter()
    result = RerankTrainResult(copy.deepcopy(model))
    best = tune(SgrafReranker(copy.deepcopy(model)))
    result.history.append({"epoch": 0, **best})
    for epoch in range(1, config.epochs + 1):
        model.train()
        losses = []
        order = rng.permutation(len(examples))
        for start in range(0, len(order), config.batch_size):
            batch = [examples[i] for i in order[start : start + config.batch_size]]
            loss = torch.stack([example_loss(model, e, tensors, config.temperature) for e in batch])
            optimizer.zero_grad()
            loss.mean().backward()
            optimizer.step()
            losses.append(float(loss.mean().detach()))
            if _over_budget(started, config):
                result.stopped_by_budget = True
                break
        figures = tune(SgrafReranker(copy.deepcopy(model)))
        result.history.append({"epoch": epoch, "loss": float(np.mean(losses)), **figures})
        log.info("epoch %d: %s", epoch, result.history[-1])
        if figures["score"] > best["score"]:
            best, result.model, result.best_epoch = figures, copy.deepcopy(model), epoch
        if result.stopped_by_budget:
            break
    result.seconds = time.perf_counter() - started
    return result


def _over_budget(started: float, config: RerankTrainConfig) -> bool:
    return config.budget_seconds is not None and (
        time.perf_counter() - started > config.budget_seconds
    )


# --------------------------------------------------------------------------- datasets


def _parts_of(records: Sequence[CatalogRecord], fraction: float, seed: int) -> tuple[set, set]:
    """Ids of the fitting and tuning parts of a training split."""
    fit, tune = split_records(records, fraction, seed)
    return {r.id for r in fit}, {r.id for r in tune}


def kfood_pairs(
    encoder: Encoder, records: Sequence[CatalogRecord]
) -> tuple[list[str], PairedVectors]:
    """Photo and recipe vectors of the records that have both (ids, pairs)."""
    kept, images = readable_images(
        [r for r in records if r.recipe is not None and r.image_path is not None]
    )
    recipes = encoder.encode_recipes([r.recipe for r in kept if r.recipe is not None])
    return [r.id for r in kept], PairedVectors(encode_images(encoder, images, None), recipes)


@dataclass(frozen=True)
class RerankData:
    """Whole datasets: the bundle's validation split (``val_fraction``, ``split_seed``) is
    cut out here, never trained or tuned on, and measured at the end as the report. The
    vectors of a whole dataset are cached once for both."""

    flickr: Sequence[CatalogRecord]
    kfood: Sequence[CatalogRecord] = ()
    val_fraction: float = 0.2
    split_seed: int = 0
    cache_dir: Path | None = None
    # "train": fit and tune flickr on the bundle's training split, report on its validation
    # split. "val-half": the vector model knows its training captions almost by heart (RSUM
    # 586 of 600 there), so its mistakes there are not the ones it makes on new captions;
    # this fits and tunes on one half of the validation split and reports on the other.
    flickr_from: str = "train"

    def __post_init__(self) -> None:
        if self.flickr_from not in FLICKR_FROM:
            raise ConfigError(f"{{flickr_from}} must be one of {', '.join(FLICKR_FROM)}")


def three_parts(
    ids: Sequence[str], records: Sequence[CatalogRecord], data: RerankData, tune_fraction: float
) -> tuple[list[int], list[int], list[int]]:
    """Row indices (of ``ids``) of the fitting, tuning and validation parts. The tuning part
    is cut from the training split with another hash seed than the bundle's own split."""
    train, _ = split_records(records, data.val_fraction, data.split_seed)
    fit, tune = _parts_of(train, tune_fraction, data.split_seed + 1)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for row, record_id in enumerate(ids):
        parts[0 if record_id in fit else 1 if record_id in tune else 2].append(row)
    return parts


def val_halves(
    records: Sequence[CatalogRecord], val_fraction: float, split_seed: int
) -> tuple[list[CatalogRecord], list[CatalogRecord]]:
    """The validation split's two halves with ``flickr_from="val-half"``: the one fitted
    and tuned on, and the one reported on (``mmsearch eval --split val-report``)."""
    _, val = split_records(records, val_fraction, split_seed)
    return split_records(val, 0.5, split_seed + 2)


def flickr_parts(
    ids: Sequence[str], data: RerankData, tune_fraction: float
) -> tuple[list[int], list[int], list[int]]:
    """Row indices of flickr's fitting, tuning and report parts (see ``flickr_from``)."""
    if data.flickr_from == "train":
        return three_parts(ids, data.flickr, data, tune_fraction)
    learn, report = val_halves(data.flickr, data.val_fraction, data.split_seed)
    fit, tune = _parts_of(learn, tune_fraction, data.split_seed + 1)
    reported = {r.id for r in report}
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for row, record_id in enumerate(ids):
        if record_id in fit or record_id in tune or record_id in reported:
            parts[0 if record_id in fit else 1 if record_id in tune else 2].append(row)
    return parts


def train_reranker(
    encoder: Encoder, data: RerankData, config: RerankTrainConfig, report_top: int = 50
) -> tuple[RerankTrainResult, dict[str, object]]:
    """SGRAF for ``encoder``'s vectors; the result and a report: the tuning history and,
    with the chosen weights, the variants on the validation split (top ``report_top``)."""
    flickr = captioned_vectors(encoder, data.flickr, data.cache_dir)
    fit_rows, tune_rows, val_rows = flickr_parts(flickr.ids, data, config.tune_fraction)
    fit, tune = flickr.take(fit_rows), flickr.take(tune_rows)
    if min(len(fit.images), len(tune.images)) < 2 or len(fit.images) <= config.negatives:
        raise ValueError(
            f"too few photos to train on ({len(fit.images)}, more than the negatives needed) "
            f"or to tune on ({len(tune.images)}, at least 2)"
        )
    examples = caption_examples(fit, config.negatives)
    pools = {"photos": fit.images}
    kfood_tune = kfood_val = None
    if data.kfood:
        ids, pairs = kfood_pairs(encoder, data.kfood)
        kfood_fit, kfood_tune, kfood_val = (
            pairs.take(rows) for rows in three_parts(ids, data.kfood, data, config.tune_fraction)
        )
        examples += paired_examples(kfood_fit, config.negatives)
        pools["recipes"] = kfood_fit.candidates
    log.info("%d training queries; tuning on %d photos", len(examples), len(tune.images))
    result = train_sgraf(
        examples,
        pools,
        lambda reranker: tune_figures(reranker, tune, kfood_tune, config.tune_top),
        flickr.images.shape[1],
        config,
    )
    chosen = SgrafReranker(copy.deepcopy(result.model))
    validation: dict[str, object] = {
        "top": report_top,
        "flickr": flickr_variants(flickr.take(val_rows), chosen, report_top),
    }
    if kfood_val is not None and len(kfood_val.queries) > 1:
        validation["kfood_image_to_recipe"] = {
            name: paired_recalls(kfood_val.queries, kfood_val.candidates, used, report_top)
            for name, used in (("single", None), ("single+rerank", chosen))
        }
    report: dict[str, object] = {
        "config": config.to_dict(),
        "flickr_from": data.flickr_from,
        "queries": len(examples),
        "fit_photos": len(fit.images),
        "tune_photos": len(tune.images),
        "val_photos": len(val_rows),
        "history": result.history,
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 1),
        "stopped_by_budget": result.stopped_by_budget,
        "validation": validation,
    }
    return result, report
