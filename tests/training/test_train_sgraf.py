"""Training SGRAF as a re-ranker on hard negatives (training.train_sgraf)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.datasets import split_records
from models.types import CatalogRecord
from training.features import Ragged
from training.rerank_features import CaptionedVectors
from training.train_sgraf import (
    RerankData,
    RerankTrainConfig,
    caption_examples,
    flickr_parts,
    hard_candidates,
    train_sgraf,
    tune_figures,
)

DIM = 16


def test_hard_candidates_are_the_right_one_then_the_best_wrong_ones() -> None:
    similarity = np.array([[0.1, 0.9, 0.5, 0.7], [0.8, 0.2, 0.3, 0.1]])
    rows = hard_candidates(similarity, np.array([1, 3]), negatives=2)
    assert rows.tolist() == [[1, 3, 2], [3, 0, 2]]
    # Asking for more negatives than there are never repeats the right one.
    assert hard_candidates(similarity, np.array([1, 3]), negatives=9)[1].tolist() == [3, 0, 2, 1]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synthetic_captions(seed: int, photos: int = 40) -> CaptionedVectors:
    """Caption vectors that find their photo badly (much noise), and n-gram parts of which
    one is the photo's own vector: what a re-ranker can learn from and a dot product cannot."""
    rng = np.random.default_rng(seed)
    images = _unit(rng.standard_normal((photos, DIM)))
    owner = np.repeat(np.arange(photos), 2)
    texts = _unit(images[owner] + 1.2 * rng.standard_normal((len(owner), DIM)))
    grams = [
        _unit(np.stack([images[j] + 0.1 * rng.standard_normal(DIM), rng.standard_normal(DIM)]))
        for j in owner
    ]
    return CaptionedVectors(
        [str(i) for i in range(photos)], images, texts, owner, Ragged.from_rows(grams, DIM)
    )


def test_training_on_hard_negatives_beats_the_vector_order_on_held_out_captions() -> None:
    torch.set_num_threads(1)
    fit, tune = synthetic_captions(0), synthetic_captions(1)
    config = RerankTrainConfig(
        negatives=7, epochs=5, batch_size=16, lr=1e-2, sim_dim=16, steps=1, tune_top=10
    )
    result = train_sgraf(
        caption_examples(fit, config.negatives),
        {"photos": fit.images},
        lambda reranker: tune_figures(reranker, tune, None, config.tune_top),
        DIM,
        config,
    )
    before = result.history[0]["flickr_rsum"]
    best = result.history[result.best_epoch]["flickr_rsum"]
    assert result.best_epoch > 0
    # Epoch 0 is the untrained scorer, whose order is the vector order's plus noise.
    assert best > before + 50  # RSUM points, on captions and photos it never saw
    assert best == max(h["flickr_rsum"] for h in result.history)


def test_a_budget_stops_training_after_the_first_step() -> None:
    fit = synthetic_captions(0)
    config = RerankTrainConfig(negatives=3, epochs=50, batch_size=8, sim_dim=8, steps=1)
    result = train_sgraf(
        caption_examples(fit, 3),
        {"photos": fit.images},
        lambda reranker: {"score": 0.0},
        DIM,
        RerankTrainConfig(**{**config.to_dict(), "budget_seconds": 1e-6}),
    )
    assert result.stopped_by_budget
    assert [h["epoch"] for h in result.history] == [0, 1]


@pytest.mark.parametrize(
    "fields",
    [{"negatives": 0}, {"temperature": 0.0}, {"tune_fraction": 1.0}, {"budget_seconds": 0}],
)
def test_invalid_options_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RerankTrainConfig(**fields)  # type: ignore[arg-type]


def test_val_half_fits_and_reports_on_disjoint_halves_of_the_validation_split() -> None:
    records = [CatalogRecord(id=f"photo-{i}", texts=("a caption",)) for i in range(400)]
    ids = [r.id for r in records]
    _, val = split_records(records, 0.2, 0)
    val_ids = {r.id for r in val}
    data = RerankData(flickr=records, flickr_from="val-half")
    fit, tune, report = (set(rows) for rows in flickr_parts(ids, data, 0.3))
    assert not (fit & tune or fit & report or tune & report)
    assert {ids[i] for i in fit | tune | report} == val_ids  # nothing from the training split
    assert 0.35 < len(report) / len(val_ids) < 0.65
    # The default keeps the validation split whole for the report.
    fit, tune, report = (set(rows) for rows in flickr_parts(ids, RerankData(records), 0.3))
    assert {ids[i] for i in report} == val_ids
    with pytest.raises(ValueError, match="flickr_from"):
        RerankData(records, flickr_from="test")
