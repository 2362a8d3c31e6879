"""The SGRAF scorer and its re-ranker adapter: order invariance, determinism, padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.rerank import SetFeatures, rerankers_of, word_ngrams
from models.sgraf import Sgraf, SgrafConfig, SgrafReranker

DIM = 16


def _reranker(seed: int = 0) -> SgrafReranker:
    torch.manual_seed(seed)
    return SgrafReranker(Sgraf(SgrafConfig(dim=DIM, sim_dim=8, steps=2)))


def _features(rng: np.random.Generator, n_parts: int) -> SetFeatures:
    return SetFeatures(
        rng.standard_normal((n_parts, DIM)).astype(np.float32),
        rng.standard_normal(DIM).astype(np.float32),
    )


def test_permuting_candidates_permutes_scores_and_runs_are_deterministic() -> None:
    rng = np.random.default_rng(0)
    query = _features(rng, 4)
    # Candidates of different sizes, so padding differs between orders.
    candidates = [_features(rng, n) for n in (1, 3, 2, 5, 1, 4)]
    reranker = _reranker()
    scores = reranker.score(query, candidates)
    assert scores.shape == (6,) and ((scores > 0) & (scores < 1)).all()
    assert len(set(np.round(scores, 6))) == 6  # the scores do tell the candidates apart
    order = rng.permutation(6)
    permuted = reranker.score(query, [candidates[i] for i in order])
    np.testing.assert_allclose(permuted, scores[order], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(reranker.score(query, candidates), scores)
    # The same seed builds the same scorer: the scores are a function of the weights.
    np.testing.assert_array_equal(_reranker().score(query, candidates), scores)


def test_a_candidate_scores_the_same_alone_and_among_others() -> None:
    rng = np.random.default_rng(1)
    query, candidates = _features(rng, 3), [_features(rng, n) for n in (2, 6)]
    reranker = _reranker()
    together = reranker.score(query, candidates)
    alone = reranker.score(query, candidates[:1])
    assert together[0] == pytest.approx(alone[0], abs=1e-6)


def test_node_layout_one_global_then_one_per_query_part() -> None:
    model = _reranker().model
    nodes = model.similarity_nodes(
        torch.randn(5, DIM), torch.randn(DIM), torch.randn(3, 2, DIM), None, torch.randn(3, DIM)
    )
    assert nodes.shape == (3, 6, 8)
    assert torch.allclose(nodes.norm(dim=-1), torch.ones(3, 6), atol=1e-5)


def test_no_candidates_no_scores() -> None:
    assert _reranker().score(_features(np.random.default_rng(2), 2), []).shape == (0,)


def test_word_ngrams() -> None:
    assert word_ngrams("spicy pork stew") == [
        "spicy", "pork", "stew", "spicy pork", "pork stew",
    ]  # fmt: skip
    assert word_ngrams("김치찌개") == ["김치찌개"]
    assert word_ngrams("!!!") == ["!!!"]
    assert len(word_ngrams(" ".join(["w"] * 100))) == 24


def test_rerankers_of_an_encoder_without_them_is_empty() -> None:
    assert dict(rerankers_of(object())) == {}


def test_config_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        SgrafConfig(dim=0)


def test_vector_scale_adds_that_multiple_of_the_wholes_cosine() -> None:
    rng = np.random.default_rng(2)
    query, candidates = _features(rng, 3), [_features(rng, n) for n in (1, 2, 4)]
    torch.manual_seed(0)
    fused = Sgraf(SgrafConfig(dim=DIM, sim_dim=8, steps=2, vector_scale=3.0))
    plain = Sgraf(SgrafConfig(dim=DIM, sim_dim=8, steps=2))
    plain.load_state_dict({k: v for k, v in fused.state_dict().items() if k != "vector_scale"})
    unit = np.stack([c.whole / np.linalg.norm(c.whole) for c in candidates])
    cosine = unit @ (query.whole / np.linalg.norm(query.whole))
    np.testing.assert_allclose(
        SgrafReranker(fused).score(query, candidates),
        SgrafReranker(plain).score(query, candidates) + 3.0 * cosine,
        rtol=1e-5,
        atol=1e-5,
    )
