"""Query arithmetic (``compose``) and metadata filters applied inside the index search."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.types import CatalogRecord
from tests.service.helpers import b64


@pytest.fixture(scope="module")
def tiny_client(tiny_client_per_backend: TestClient) -> TestClient:
    """Every test here runs on the FAISS and on the Milvus backend."""
    return tiny_client_per_backend


def _search(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _ranked(body: dict[str, Any]) -> list[tuple[str, float]]:
    return [(m["id"], round(m["score"], 5)) for m in body["matches"]]


def _embed(client: TestClient, *texts: str) -> np.ndarray:
    inputs = [{"text": text} for text in texts]
    return np.array(client.post("/embed", json={"inputs": inputs}).json()["embeddings"])


# --------------------------------------------------------------------------- compose


@pytest.mark.parametrize(
    "term",
    [
        {"text": "kimchi stew"},
        {"tag": "pizza"},
        {"item_id": "item-3"},
        {"recipe": {"title": "pasta 3", "ingredients": ["salt"]}},
    ],
)
def test_a_single_term_composition_equals_plain_search(
    tiny_client: TestClient, term: dict[str, Any]
) -> None:
    plain = _search(tiny_client, query=term, k=8)
    composed = _search(tiny_client, query={"compose": [{**term, "weight": 2.5}]}, k=8)

    assert _ranked(composed) == _ranked(plain)


def test_single_image_and_vector_terms_equal_plain_search(
    tiny_client: TestClient, tiny_records: list[CatalogRecord]
) -> None:
    assert tiny_records[5].image_path is not None
    image = b64(tiny_records[5].image_path.read_bytes())
    vector = (np.arange(32, dtype=np.float32) - 10).tolist()

    for term in ({"image": image}, {"vector": vector}):
        plain = _search(tiny_client, query=term, k=6)
        composed = _search(tiny_client, query={"compose": [term]}, k=6)
        assert _ranked(composed) == _ranked(plain)


def test_composition_searches_the_normalised_weighted_sum(tiny_client: TestClient) -> None:
    # Words outside the query lexicon: /embed and a search read them the same way.
    ramen, salt, burrito = _embed(tiny_client, "ramen", "salt", "burrito")
    terms = [
        {"text": "ramen", "weight": 1},
        {"text": "salt", "weight": -1},
        {"text": "burrito", "weight": 0.5},
    ]
    total = ramen - salt + 0.5 * burrito

    composed = _search(tiny_client, query={"compose": terms}, k=10)
    by_vector = _search(
        tiny_client, query={"vector": (total / np.linalg.norm(total)).tolist()}, k=10
    )

    assert _ranked(composed) == _ranked(by_vector)


def test_item_terms_leave_their_items_out(tiny_client: TestClient) -> None:
    terms = [{"item_id": "item-1"}, {"text": "dumplings", "weight": 0.5}]

    body = _search(tiny_client, query={"compose": terms}, k=20)

    assert "item-1" not in [m["id"] for m in body["matches"]]


@pytest.mark.parametrize(
    ("compose", "expected"),
    [
        ([], "compose must list at least one term"),
        ([{"text": "pasta", "weight": 1}, {"text": "pasta", "weight": -1}], "almost) zero"),
        ([{"text": "pasta", "weight": 0}], "almost) zero"),
        ([{"text": "pasta", "image": "x"}], "give exactly one of"),
        ([{"compose": [{"text": "pasta"}]}], "compose"),
        ([{"item_id": "no-such-item"}], "no-such-item"),
        ([{"text": f"t{i}"} for i in range(65)], "at most 64"),
    ],
)
def test_bad_compositions_are_4xx_with_a_clear_message(
    tiny_client: TestClient, compose: list[dict[str, Any]], expected: str
) -> None:
    response = tiny_client.post("/search", json={"query": {"compose": compose}})

    assert response.status_code in (404, 422), response.text
    assert expected in json.dumps(response.json()["detail"], ensure_ascii=False)


def test_non_finite_weight_is_422(tiny_client: TestClient) -> None:
    body = '{"query": {"compose": [{"text": "pasta", "weight": Infinity}]}}'

    response = tiny_client.post(
        "/search", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422
    assert "finite" in json.dumps(response.json()["detail"])


# --------------------------------------------------------------------------- filters


def _matching(records: list[CatalogRecord], keep) -> set[str]:
    return {record.id for record in records if keep(record.metadata)}


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({"cuisine": "한식"}, lambda m: m["cuisine"] == "한식"),
        ({"cuisine": ["한식", "중식"]}, lambda m: m["cuisine"] in ("한식", "중식")),
        ({"minutes": {"lte": 20}}, lambda m: m["minutes"] <= 20),
        ({"minutes": {"gt": 10, "lt": 50}}, lambda m: 10 < m["minutes"] < 50),
        ({"minutes": {"gte": 60}}, lambda m: m["minutes"] >= 60),
        ({"cuisine": "양식", "minutes": {"gte": 30}}, lambda m: m["cuisine"] == "양식"
         and m["minutes"] >= 30),
        ({"n": [3, 17, 42]}, lambda m: m["n"] in (3, 17, 42)),
    ],
)  # fmt: skip
def test_filters_return_exactly_the_matching_items(
    tiny_client: TestClient, tiny_records: list[CatalogRecord], filters: dict, keep
) -> None:
    expected = _matching(tiny_records, keep)

    everything = _search(tiny_client, query={"text": "pasta"}, k=60, filter=filters)

    assert {m["id"] for m in everything["matches"]} == expected


@pytest.mark.parametrize("kinds", [None, ["image"], ["text", "recipe"]])
def test_filters_still_return_k_items_when_most_are_filtered_out(
    tiny_client: TestClient, tiny_records: list[CatalogRecord], kinds: list[str] | None
) -> None:
    # 9 of 60 items pass; the best unfiltered hits are mostly other items.
    expected = _matching(tiny_records, lambda m: m["minutes"] == 0)
    assert len(expected) == 9

    body = _search(tiny_client, query={"text": "pizza"}, k=5, kinds=kinds,
                   filter={"minutes": {"lte": 0}})  # fmt: skip

    ids = [m["id"] for m in body["matches"]]
    assert len(ids) == 5 and set(ids) <= expected
    unfiltered = _search(tiny_client, query={"text": "pizza"}, k=5, kinds=kinds)
    assert not {m["id"] for m in unfiltered["matches"]} <= expected


def test_filters_compose_with_hybrid_ranking_and_tags(
    tiny_client: TestClient, tiny_records: list[CatalogRecord]
) -> None:
    expected = _matching(tiny_records, lambda m: m["cuisine"] == "중식")
    body = _search(tiny_client, query={"tag": "bibimbap"}, k=60, rank="hybrid",
                   filter={"cuisine": "중식"}, kinds=["image"])  # fmt: skip

    assert {m["id"] for m in body["matches"]} == expected


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"minutes": {"le": 3}}, "le"),
        ({"minutes": {"lte": True}}, "range bounds must be all numbers or all strings"),
        ({"minutes": {"gte": 1, "lte": "x"}}, "range bounds must be all numbers or all strings"),
        ({"minutes": {}}, "range keys"),
        ({"cuisine": []}, "empty"),
        ({"cuisine": {"eq": "한식"}}, "eq"),
        ({"spiciness": {"lte": 3}}, "spiciness"),
    ],
)
def test_unknown_operators_and_wrong_types_are_422(
    tiny_client: TestClient, filters: dict, expected: str
) -> None:
    response = tiny_client.post("/search", json={"query": {"text": "a"}, "filter": filters})

    assert response.status_code == 422, response.text
    assert expected in json.dumps(response.json()["detail"], ensure_ascii=False)
