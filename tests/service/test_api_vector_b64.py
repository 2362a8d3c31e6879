"""Vectors as base64 float32: /embed returns them on request, /search takes vector_b64."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.encoders import Encoder
from tests.service.helpers import detail_text


def _b64(values: np.ndarray | list[float]) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def _embed(client: TestClient, encoding: str | None = None) -> dict:
    body: dict = {"inputs": [{"text": "된장찌개"}, {"text": "spicy pork stew"}]}
    if encoding is not None:
        body["encoding"] = encoding
    response = client.post("/embed", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_embed_base64_holds_the_same_float32_values_as_the_float_lists(
    client: TestClient,
) -> None:
    floats = _embed(client)["embeddings"]
    encoded = _embed(client, "base64")["embeddings"]

    assert all(isinstance(text, str) for text in encoded)
    decoded = np.stack([np.frombuffer(base64.b64decode(text), "<f4") for text in encoded])
    np.testing.assert_array_equal(decoded, np.asarray(floats, dtype=np.float32))
    assert _embed(client, "float")["embeddings"] == floats  # the default, spelled out


def test_search_by_vector_b64_equals_search_by_float_list(client: TestClient) -> None:
    floats = _embed(client)["embeddings"][1]
    encoded = _embed(client, "base64")["embeddings"][1]

    by_list = client.post("/search", json={"query": {"vector": floats}, "k": 5}).json()
    by_b64 = client.post("/search", json={"query": {"vector_b64": encoded}, "k": 5}).json()

    assert by_b64["matches"] == by_list["matches"]
    assert by_b64["classes"] == by_list["classes"]
    assert len(by_b64["matches"]) == 5


@pytest.mark.parametrize(
    ("make_b64", "expected"),
    [
        (lambda dim: "not base64!", "vector_b64 is not valid base64"),
        (lambda dim: base64.b64encode(b"abcdef").decode(), "float32 values (4 bytes each)"),
        (lambda dim: "", "float32 values (4 bytes each), got 0 bytes"),
        (lambda dim: _b64([0.5] * (dim - 1)), "wrong dimension: expected {dim}, got {dim_1}"),
        (lambda dim: _b64([0.1] * (dim - 1) + [float("nan")]), "must be finite"),
        (lambda dim: _b64([0.1] * (dim - 1) + [float("inf")]), "must be finite"),
        (lambda dim: _b64([0.0] * dim), "must not be all zeros"),
    ],
)
def test_bad_vector_b64_is_422_saying_why(
    client: TestClient, encoder: Encoder, make_b64, expected: str
) -> None:
    response = client.post("/search", json={"query": {"vector_b64": make_b64(encoder.dim)}})

    assert response.status_code == 422, response.text
    assert expected.format(dim=encoder.dim, dim_1=encoder.dim - 1) in detail_text(response)


def test_vector_and_vector_b64_together_is_422(client: TestClient, encoder: Encoder) -> None:
    vector = [0.5] * encoder.dim
    query = {"vector": vector, "vector_b64": _b64(vector)}
    response = client.post("/search", json={"query": query})

    assert response.status_code == 422
    assert "(got vector, vector_b64)" in detail_text(response)


def test_unknown_embed_encoding_is_422(client: TestClient) -> None:
    response = client.post("/embed", json={"inputs": [{"text": "a"}], "encoding": "hex"})

    assert response.status_code == 422
    assert "encoding" in detail_text(response)
