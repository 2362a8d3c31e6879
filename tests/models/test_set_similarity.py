"""Smooth-Chamfer similarity on sets whose values can be worked out on paper."""

from __future__ import annotations

import math

import pytest
import torch

from models.set_similarity import chamfer_matrix, smooth_chamfer, smooth_chamfer_matrix

EYE4 = torch.eye(4)


def test_equal_orthonormal_sets() -> None:
    # cos is the identity: every row and column has one 1 and one 0, so
    # SC = (1/alpha) * log(e^alpha + 1) in both directions.
    s = EYE4[:2][None]
    for alpha in (1.0, 4.0):
        got = smooth_chamfer_matrix(s, s, alpha)
        assert got.shape == (1, 1)
        assert got.item() == pytest.approx(math.log(math.exp(alpha) + 1) / alpha, rel=1e-6)


def test_disjoint_orthogonal_sets_score_log_n_over_alpha() -> None:
    # Every cosine is 0: each soft maximum is (1/alpha) * log(n), n the other set's size.
    a, b = EYE4[:2][None], EYE4[2:][None]
    assert smooth_chamfer_matrix(a, b, 2.0).item() == pytest.approx(math.log(2) / 2.0)
    # Sizes 1 and 3: directions give log(3)/alpha and log(1)/alpha = 0, averaged.
    got = smooth_chamfer_matrix(EYE4[:1][None], EYE4[1:][None], 1.0).item()
    assert got == pytest.approx(0.5 * math.log(3))


def test_hand_computed_mixed_set() -> None:
    # a = {e1}, b = {e1, e2}: a->b: log(e + 1); b->a: mean(log e, log 1) = 0.5.
    got = smooth_chamfer_matrix(EYE4[:1][None], EYE4[:2][None], 1.0).item()
    assert got == pytest.approx(0.5 * (math.log(math.e + 1) + 0.5))


def test_tends_to_max_based_chamfer_as_alpha_grows() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 8, generator=gen), torch.randn(5, 2, 8, generator=gen)
    hard = chamfer_matrix(a, b)
    gaps = [
        (smooth_chamfer_matrix(a, b, alpha) - hard).abs().max().item() for alpha in (1, 10, 1e3)
    ]
    assert gaps[0] > gaps[1] > gaps[2]
    # The soft maximum exceeds the maximum by at most log(n) / alpha (n <= 4 here).
    assert gaps[2] <= math.log(4) / 1e3 + 1e-6
    assert (smooth_chamfer_matrix(a, b, 1.0) >= hard - 1e-6).all()


def test_symmetric() -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 4, 8, generator=gen), torch.randn(5, 2, 8, generator=gen)
    assert torch.allclose(smooth_chamfer_matrix(a, b), smooth_chamfer_matrix(b, a).T, atol=1e-6)


def test_batched_query_matches_matrix_and_respects_padding() -> None:
    gen = torch.Generator().manual_seed(2)
    query = torch.randn(3, 8, generator=gen)
    items = torch.randn(4, 5, 8, generator=gen)
    full = smooth_chamfer(query, items, 8.0)
    assert torch.allclose(full, smooth_chamfer_matrix(query[None], items, 8.0)[0])
    # Item 1 as a set of 2 vectors, padded to 5 with junk: the mask makes it the 2-set.
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1, 2:] = False
    padded = smooth_chamfer(query, items, 8.0, item_mask=mask)
    alone = smooth_chamfer(query, items[1:2, :2], 8.0)
    assert padded[1].item() == pytest.approx(alone.item(), rel=1e-6)
    assert torch.allclose(padded[[0, 2, 3]], full[[0, 2, 3]])


def test_alpha_must_be_positive() -> None:
    with pytest.raises(ValueError, match="alpha"):
        smooth_chamfer_matrix(EYE4[None], EYE4[None], 0.0)
