"""The numpy smooth-Chamfer re-score agrees with the torch definition it serves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.set_scores import smooth_chamfer_scores
from models.set_similarity import smooth_chamfer


@pytest.mark.parametrize(("k", "m", "alpha"), [(4, 4, 16.0), (3, 5, 1.0), (1, 2, 64.0)])
def test_matches_torch_smooth_chamfer(k: int, m: int, alpha: float) -> None:
    rng = np.random.default_rng(k * 10 + m)
    query = rng.standard_normal((k, 24)).astype(np.float32)  # unnormalised on purpose
    items = rng.standard_normal((50, m, 24)).astype(np.float32)
    expected = smooth_chamfer(torch.from_numpy(query), torch.from_numpy(items), alpha).numpy()
    got = smooth_chamfer_scores(query, items, alpha)
    assert got.shape == (50,) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_orthogonal_sets_score_log_n_over_alpha_without_overflow() -> None:
    # Every cosine 0 gives log(2)/alpha; alpha 1000 on equal sets would overflow exp().
    eye = np.eye(4, dtype=np.float32)
    assert smooth_chamfer_scores(eye[:2], eye[None, 2:], 2.0)[0] == pytest.approx(math.log(2) / 2)
    same = smooth_chamfer_scores(eye[:2], eye[None, :2], 1000.0)[0]
    assert same == pytest.approx(1.0 + math.log(1 + math.exp(-1000.0)) / 1000.0)


def test_alpha_must_be_positive() -> None:
    with pytest.raises(ValueError, match="alpha"):
        smooth_chamfer_scores(np.ones((1, 2), np.float32), np.ones((1, 1, 2), np.float32), 0.0)
