"""/search with "rerank": the top N of the vector search re-ordered by a (tiny, untrained,
real) SGRAF, nothing else moved; and the 422s."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from index.snapshot import load_current
from models.rerank import Reranker, SetFeatures, word_ngrams
from models.sgraf import Sgraf, SgrafConfig, SgrafReranker
from service.app import create_app
from service.reranking import candidate_features
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import detail_text, make_settings

QUERY = {"text": "bibimbap served hot"}


class RerankingTinyEncoder(TinyEncoder):
    """The tiny test encoder carrying a random-init SGRAF, as a bundle carries a trained one."""

    def __init__(self) -> None:
        super().__init__(dim=32, seed=0)  # the tiny index's encoder: same fingerprint
        torch.manual_seed(0)
        self.rerankers: dict[str, Reranker] = {
            "sgraf": SgrafReranker(Sgraf(SgrafConfig(dim=32, sim_dim=16, steps=2)))
        }


@pytest.fixture(scope="module")
def encoder() -> RerankingTinyEncoder:
    return RerankingTinyEncoder()


@pytest.fixture(scope="module")
def client(tiny_index_dir: Path, encoder: RerankingTinyEncoder) -> Iterator[TestClient]:
    # No query lexicon: the query's global vector is then exactly the text's embedding.
    settings = make_settings(tiny_index_dir, query_lexicon="none")
    with TestClient(create_app(settings, encoder=encoder)) as test_client:
        yield test_client


def _search(client: TestClient, **body: Any) -> list[dict[str, Any]]:
    response = client.post("/search", json={"query": QUERY, "top_classes": 0, **body})
    assert response.status_code == 200, response.text
    matches: list[dict[str, Any]] = response.json()["matches"]
    return matches


def test_rerank_reorders_only_the_top_n(client: TestClient) -> None:
    plain = _search(client, k=20)
    reranked = _search(client, k=20, rerank={"model": "sgraf", "top": 8})
    plain_ids, reranked_ids = [m["id"] for m in plain], [m["id"] for m in reranked]
    assert sorted(reranked_ids[:8]) == sorted(plain_ids[:8])
    assert reranked_ids[8:] == plain_ids[8:]
    assert reranked_ids[:8] != plain_ids[:8]  # the untrained scorer does disagree
    assert [m["rank"] for m in reranked] == list(range(1, 21))
    # rerank_score exactly for the top N, in descending order; score stays the vector one.
    top_scores = [m["rerank_score"] for m in reranked[:8]]
    assert all(s is not None for s in top_scores) and top_scores == sorted(top_scores)[::-1]
    assert all(m["rerank_score"] is None for m in reranked[8:])
    assert all(m["rerank_score"] is None for m in plain)
    vector_scores = {m["id"]: m["score"] for m in plain}
    assert all(m["score"] == pytest.approx(vector_scores[m["id"]]) for m in reranked)


def test_top_over_k_returns_the_best_k_of_the_reranked_top(client: TestClient) -> None:
    plain_ids = [m["id"] for m in _search(client, k=12)]
    wide = _search(client, k=12, rerank={"model": "sgraf", "top": 12})
    narrow = _search(client, k=4, rerank={"model": "sgraf", "top": 12})
    assert [m["id"] for m in narrow] == [m["id"] for m in wide][:4]
    assert {m["id"] for m in wide} == set(plain_ids)


def test_text_query_is_scored_by_its_word_ngrams(
    client: TestClient, encoder: RerankingTinyEncoder, tiny_index_dir: Path
) -> None:
    top = _search(client, k=3, rerank={"model": "sgraf", "top": 3})
    text = QUERY["text"]
    query = SetFeatures(encoder.encode_texts(word_ngrams(text)), encoder.encode_texts([text])[0])
    snapshot = load_current(tiny_index_dir)
    candidates = [candidate_features(snapshot, m["id"]) for m in top]
    expected = encoder.rerankers["sgraf"].score(query, candidates)
    np.testing.assert_allclose([m["rerank_score"] for m in top], expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("rerank", "expected"),
    [
        ({"model": "bert", "top": 10}, "sgraf"),
        ({"model": "sgraf", "top": 201}, "200"),
        ({"model": "sgraf", "top": 0}, "1"),
        ({"top": 10}, "model"),
    ],
)
def test_bad_rerank_requests_are_422(
    client: TestClient, rerank: dict[str, Any], expected: str
) -> None:
    response = client.post("/search", json={"query": QUERY, "rerank": rerank})
    assert response.status_code == 422
    assert expected in detail_text(response)


def test_a_model_without_a_trained_reranker_says_so(tiny_client: TestClient) -> None:
    response = tiny_client.post("/search", json={"query": QUERY, "rerank": {"model": "sgraf"}})
    assert response.status_code == 422
    assert "carries no trained 'sgraf' re-ranker" in detail_text(response)


def test_top_over_the_servers_max_k_is_422(
    tiny_index_dir: Path, encoder: RerankingTinyEncoder
) -> None:
    settings = make_settings(tiny_index_dir, max_k=20)
    with TestClient(create_app(settings, encoder=encoder)) as small:
        response = small.post("/search", json={"query": QUERY, "rerank": {"model": "sgraf"}})
    assert response.status_code == 422
    assert "at most 20" in detail_text(response)
