"""Confidence curves, calibration error, hubness and the trust report on known data."""

from __future__ import annotations

import numpy as np
import pytest

from models.calibration import Calibration, Curve
from training.trust import (
    Direction,
    csls_penalty,
    expected_calibration_error,
    fit_calibration,
    fit_curve,
    hubness,
    trust_report,
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_fit_curve_recovers_a_known_logistic_curve() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(-1, 1, 40_000)
    labels = rng.random(40_000) < _sigmoid(8.0 * scores - 2.0)
    curve = fit_curve(scores, labels)
    assert curve.a == pytest.approx(8.0, rel=0.08)
    assert curve.b == pytest.approx(-2.0, abs=0.15)


def test_fit_curve_recovers_the_rank_term_of_a_known_curve() -> None:
    rng = np.random.default_rng(4)
    scores = rng.uniform(-1, 1, 60_000)
    ranks = rng.integers(1, 11, 60_000)
    labels = rng.random(60_000) < _sigmoid(6.0 * scores - 1.5 * np.log(ranks) + 0.5)
    curve = fit_curve(scores, labels, ranks)
    assert curve.a == pytest.approx(6.0, rel=0.08)
    assert curve.c == pytest.approx(-1.5, abs=0.15)
    assert curve.b == pytest.approx(0.5, abs=0.15)


def test_a_rank_term_that_favours_worse_ranks_is_dropped() -> None:
    rng = np.random.default_rng(5)
    scores = rng.uniform(-1, 1, 20_000)
    ranks = rng.integers(1, 11, 20_000)
    labels = rng.random(20_000) < _sigmoid(5.0 * scores + 0.8 * np.log(ranks))
    curve = fit_curve(scores, labels, ranks)
    assert curve.c == 0.0 and curve.a > 0


def test_fit_curve_without_positives_stays_flat_and_low() -> None:
    curve = fit_curve(np.linspace(0, 1, 50), np.zeros(50, dtype=bool))
    confidence = curve(np.array([0.0, 1.0]))
    assert confidence.max() < 0.05
    assert confidence[1] - confidence[0] < 1e-2


def test_expected_calibration_error_of_calibrated_and_overconfident_scores() -> None:
    rng = np.random.default_rng(1)
    confidence = rng.random(50_000)
    calibrated = rng.random(50_000) < confidence
    assert expected_calibration_error(confidence, calibrated) < 0.02
    overconfident = np.full(10_000, 0.9)
    coin = rng.random(10_000) < 0.5
    assert expected_calibration_error(overconfident, coin) == pytest.approx(0.4, abs=0.02)


def test_hubness_counts_a_candidate_that_is_near_every_query() -> None:
    similarity = np.random.default_rng(2).random((20, 8)) * 0.5
    similarity[:, 3] = 0.9  # candidate 3 tops every list
    found = hubness(similarity, top=3)
    assert found["max_share"] == 1.0
    assert found["queries"] == 20 and found["candidates"] == 8
    assert 1 < found["distinct_in_top"] <= 8


def test_csls_penalty_is_the_mean_of_the_k_nearest_reference_similarities() -> None:
    candidates = np.eye(3, dtype=np.float32)
    reference = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 1, 0]], dtype=np.float32)
    penalty = csls_penalty(candidates, reference, k=2)
    np.testing.assert_allclose(penalty, [(1 + 0.6) / 2, (1 + 0.8) / 2, 0.0], atol=1e-6)


def test_calibration_falls_back_to_the_row_kind_then_to_all_pairs() -> None:
    specific, by_kind, pooled = Curve(10, -5), Curve(5, -2), Curve(3, -1)
    calibration = Calibration({"image->recipe": specific, "*->recipe": by_kind, "*->*": pooled})
    assert calibration.curve("image", "recipe") is specific
    assert calibration.curve("text", "recipe") is by_kind
    assert calibration.curve("text", "image") is pooled
    again = Calibration.from_dict(calibration.to_dict())
    assert again.curve("image", "recipe") == specific


@pytest.mark.parametrize(
    "bad",
    [
        {"image->recipe": {"a": 1.0, "b": 0.0}},  # no pooled curve
        {"*->*": {"a": -1.0, "b": 0.0}},  # a decreasing curve
        {"*->*": {"a": 1.0, "b": 0.0, "c": 0.5}},  # worse ranks more confident
        {"*->*": {"a": 1.0}},
        ["*->*"],
    ],
)
def test_malformed_calibrations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        Calibration.from_dict(bad)


def _separable_direction(n: int, seed: int) -> Direction:
    """True pairs score about 0.65, false ones about 0.2: a well-separated model, but
    one query in seven has a true item that looks like noise."""
    rng = np.random.default_rng(seed)
    similarity = rng.normal(0.2, 0.05, (n, n))
    missed = np.arange(n) % 7 == 0  # both halves get some
    similarity[np.arange(n), np.arange(n)] = np.where(missed, 0.1, rng.normal(0.65, 0.05, n))
    return Direction(
        "image", "recipe", "toy", similarity, np.eye(n, dtype=bool), np.eye(n, dtype=np.float32)
    )


def test_trust_report_on_a_separable_direction() -> None:
    d = _separable_direction(200, seed=3)
    calibration = fit_calibration([d])
    figures = trust_report([d], calibration)["directions"]["toy:image->recipe"]
    assert figures["queries_reported"] == 100
    assert figures["ece_top10"] < 0.05
    # The true item removed, the best remaining one is noise: low confidence.
    assert figures["absent_rank1_above_0.5"] < 0.05
    assert figures["median_score_rank1_true"] > figures["median_score_rank1_false"] + 0.2
    assert 0.8 < figures["R@1"] < 0.95
