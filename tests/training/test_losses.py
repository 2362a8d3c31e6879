"""Losses against hand-made cases whose values can be worked out on paper."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    LearnableTemperature,
    SemanticRegularizer,
    info_nce,
    nt_xent,
    pairwise_similarity,
    supervised_contrastive,
    triplet_ranking,
)

E1, E2 = [1.0, 0.0], [0.0, 1.0]


def test_pairwise_similarity_cosine_and_euclidean() -> None:
    a = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    cosine = pairwise_similarity(a, b, "cosine")
    assert torch.allclose(cosine, torch.tensor([[1.0, 2**-0.5], [0.0, 2**-0.5]]))
    euclidean = pairwise_similarity(a, b, "euclidean")
    assert torch.allclose(euclidean, torch.tensor([[-4.0, -5.0], [-5.0, -2.0]]))


def test_unknown_metric_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        pairwise_similarity(torch.ones(2, 2), torch.ones(2, 2), "manhattan")  # type: ignore[arg-type]


def test_info_nce_matches_hand_computed_value() -> None:
    # Orthogonal pairs: logits are [[1, 0], [0, 1]] / tau in both directions.
    a = b = torch.tensor([E1, E2])
    expected = -math.log(math.e / (math.e + 1.0))
    assert info_nce(a, b, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # A sharper temperature makes the same correct pairing cheaper.
    assert info_nce(a, b, 0.1).item() < expected


def test_info_nce_prefers_the_right_pairing() -> None:
    a = torch.tensor([E1, E2])
    assert info_nce(a, a, 0.1) < info_nce(a, a.flip(0), 0.1)


def test_nt_xent_matches_hand_computed_value() -> None:
    # Views of sample 0 are E1, of sample 1 E2. Each anchor sees its twin
    # (cos 1) and two others (cos 0): -log(e / (e + 2)).
    view = torch.tensor([E1, E2])
    expected = -math.log(math.e / (math.e + 2.0))
    assert nt_xent(view, view, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_supervised_contrastive_averages_over_positives() -> None:
    # Three unit vectors, rows 0 and 1 share a label; row 2 has no positive and is skipped.
    z = torch.tensor([E1, E1, E2])
    labels = torch.tensor([0, 0, 1])
    expected = -math.log(math.e / (math.e + 1.0))
    loss = supervised_contrastive(z, labels, 1.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_supervised_contrastive_needs_a_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        supervised_contrastive(torch.eye(3), torch.arange(3), 1.0)


def test_triplet_ranking_uses_hardest_negative() -> None:
    a = torch.tensor([E1, E2, E2])
    b = torch.tensor([E1, E2, E1])
    # Cosine scores (rows a, columns b) [[1,0,1],[0,1,0],[0,1,0]]; positives 1, 1, 0.
    # Hardest hinge per row (a -> b), margin .2: [.2, 0, 1.2]; per column (b -> a):
    # [0, .2, 1.2]. Mean over the three pairs of the summed directions: 2.8 / 3.
    assert triplet_ranking(a, b, margin=0.2).item() == pytest.approx(2.8 / 3)
    # Summing all violating negatives instead adds row 2's second hinge (.2, column 0)
    # and column 2's second (.2, row 1): (2.8 + .4) / 3.
    assert triplet_ranking(a, b, margin=0.2, hardest=False).item() == pytest.approx(3.2 / 3)


def test_triplet_ranking_zero_when_margin_is_met_and_sum_variant() -> None:
    a = torch.tensor([E1, E2])
    assert triplet_ranking(a, a, margin=0.5).item() == 0.0
    # With margin 1.5 every negative violates by 0.5: hardest gives 1.0 per pair,
    # summing over the single negative per direction gives the same.
    assert triplet_ranking(a, a, margin=1.5).item() == pytest.approx(1.0)
    assert triplet_ranking(a, a, margin=1.5, hardest=False).item() == pytest.approx(1.0)


def test_triplet_ranking_euclidean() -> None:
    a = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    # Squared distances: positives 0, negatives 9: margin 1 is met.
    assert triplet_ranking(a, a, margin=1.0, metric="euclidean").item() == 0.0


def test_paired_losses_reject_mismatched_batches() -> None:
    with pytest.raises(ValueError):
        info_nce(torch.ones(3, 2), torch.ones(2, 2), 1.0)
    with pytest.raises(ValueError):
        triplet_ranking(torch.ones(1, 2), torch.ones(1, 2))


def test_learnable_temperature_is_clamped_and_trains() -> None:
    temperature = LearnableTemperature(initial=0.07, min_tau=0.01, max_tau=1.0)
    assert temperature().item() == pytest.approx(0.07, rel=1e-5)
    with torch.no_grad():
        temperature.log_inverse.fill_(100.0)
    assert temperature().item() == pytest.approx(0.01, rel=1e-5)
    with pytest.raises(ValueError):
        LearnableTemperature(initial=2.0, max_tau=1.0)


def test_learnable_temperature_gets_a_gradient() -> None:
    temperature = LearnableTemperature(initial=0.5)
    a = torch.tensor([E1, E2])
    info_nce(a, a, temperature()).backward()
    assert temperature.log_inverse.grad is not None
    # Correct pairs: a sharper temperature lowers the loss, so the gradient pushes log(1/tau) up.
    assert temperature.log_inverse.grad.item() < 0


def test_semantic_regularizer_is_weighted_shared_cross_entropy() -> None:
    torch.manual_seed(0)
    regularizer = SemanticRegularizer(dim=2, n_classes=3, weight=0.5)
    x, y = torch.randn(4, 2), torch.randn(4, 2)
    labels = torch.tensor([0, 1, 2, 0])
    ce = torch.nn.functional.cross_entropy
    expected = 0.5 * (ce(regularizer.head(x), labels) + ce(regularizer.head(y), labels)) / 2
    assert regularizer(x, y, labels=labels).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError):
        SemanticRegularizer(2, 3, weight=-1.0)
