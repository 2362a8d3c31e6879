"""POST /embed and /embed/image: every input kind, batching, and every bad input."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.encoders import Encoder
from service.app import create_app
from tests.service.helpers import (
    b64,
    bomb_png,
    detail_text,
    image_bytes,
    make_settings,
    noise_png,
)

RECIPE = {
    "title": "김치찌개",
    "ingredients": ["김치", "돼지고기", "두부"],
    "instructions": ["김치를 볶는다.", "물을 붓고 끓인다."],
}


def _vectors(response_json: dict) -> np.ndarray:
    return np.asarray(response_json["embeddings"], dtype=np.float32)


def test_embeds_each_kind_in_order_with_unit_norms(client: TestClient, encoder: Encoder) -> None:
    inputs = [
        {"text": "spicy pork stew"},
        {"image": b64(image_bytes())},
        {"recipe": RECIPE},
        {"text": "김치찌개"},
    ]
    response = client.post("/embed", json={"inputs": inputs})

    assert response.status_code == 200, response.text
    body = response.json()
    vectors = _vectors(body)
    assert body["model"] == encoder.fingerprint
    assert body["dim"] == encoder.dim
    assert vectors.shape == (4, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # Batching by kind must not reorder: each row equals the input embedded alone.
    for position, single_input in enumerate(inputs):
        alone = _vectors(client.post("/embed", json={"inputs": [single_input]}).json())
        np.testing.assert_allclose(vectors[position], alone[0], atol=1e-4)


def test_data_uri_and_raw_base64_give_the_same_vector(client: TestClient) -> None:
    data = image_bytes(fmt="JPEG")
    raw = client.post("/embed", json={"inputs": [{"image": b64(data)}]})
    uri = client.post("/embed", json={"inputs": [{"image": f"data:image/jpeg;base64,{b64(data)}"}]})

    assert raw.status_code == uri.status_code == 200
    np.testing.assert_allclose(_vectors(raw.json()), _vectors(uri.json()), atol=1e-5)


def test_embed_image_upload_matches_base64(client: TestClient, encoder: Encoder) -> None:
    data = image_bytes((10, 120, 30))
    upload = client.post("/embed/image", files={"file": ("dish.png", data, "image/png")})
    inline = client.post("/embed", json={"inputs": [{"image": b64(data)}]})

    assert upload.status_code == 200, upload.text
    assert _vectors(upload.json()).shape == (1, encoder.dim)
    np.testing.assert_allclose(_vectors(upload.json()), _vectors(inline.json()), atol=1e-5)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"inputs": [{"text": ""}]}, "text must not be empty"),
        ({"inputs": [{"text": "   "}]}, "text must not be empty"),
        ({"inputs": [{}]}, "give exactly one of text, image, recipe (got none)"),
        ({"inputs": [{"text": "a", "recipe": RECIPE}]}, "(got text, recipe)"),
        ({"inputs": [{"recipe": {"title": ""}}]}, "recipe title must not be empty"),
        ({"inputs": [{"audio": "x"}]}, "extra"),
        ({"inputs": []}, "at least 1"),
        ({"inputs": "spicy pork"}, "list"),
        ({"text": "spicy pork"}, "inputs"),
        ([1, 2, 3], "dict"),
    ],
)
def test_wrong_shape_is_422_saying_what(client: TestClient, payload: object, expected: str) -> None:
    response = client.post("/embed", json=payload)

    assert response.status_code == 422
    assert expected in detail_text(response)


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/embed", content=b'{"inputs": [{"text": "a"', headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422
    assert "JSON decode error" in detail_text(response)


def test_validation_errors_do_not_echo_the_input(client: TestClient) -> None:
    big = "A" * 100_000
    response = client.post("/embed", json={"inputs": [{"image": big, "text": "x"}]})

    assert response.status_code == 422
    assert big not in response.text


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("not base64 at all!", "not valid base64"),
        (b64(b"plain text, not an image"), "not a recognised image format"),
        (b64(image_bytes(fmt="JPEG")[:200]), "could not be read as an image"),
        (b64(noise_png(64)[:4000]), "truncated or corrupt"),
        ("data:text/plain;base64," + b64(b"hello"), "expected image/*"),
    ],
)
def test_corrupt_base64_image_is_422(client: TestClient, image: str, expected: str) -> None:
    response = client.post("/embed", json={"inputs": [{"image": image}]})

    assert response.status_code == 422
    assert expected in response.json()["detail"]


def test_non_image_upload_is_422(client: TestClient) -> None:
    files = {"file": ("notes.txt", b"just some text", "text/plain")}
    response = client.post("/embed/image", files=files)

    assert response.status_code == 422
    assert "not a recognised image format" in response.json()["detail"]


def test_empty_upload_is_422(client: TestClient) -> None:
    response = client.post("/embed/image", files={"file": ("empty.png", b"", "image/png")})

    assert response.status_code == 422
    assert "empty" in response.json()["detail"]


def test_missing_upload_field_is_422(client: TestClient) -> None:
    response = client.post("/embed/image", data={"other": "x"})

    assert response.status_code == 422
    assert "file" in detail_text(response)


def test_decompression_bomb_is_413(client: TestClient) -> None:
    upload = client.post("/embed/image", files={"file": ("bomb.png", bomb_png(), "image/png")})
    inline = client.post("/embed", json={"inputs": [{"image": b64(bomb_png())}]})

    for response in (upload, inline):
        assert response.status_code == 413
        assert "30000x30000" in response.json()["detail"] or "bomb" in response.json()["detail"]


def test_too_many_inputs_is_422(client: TestClient) -> None:
    inputs = [{"text": f"dish {i}"} for i in range(65)]
    response = client.post("/embed", json={"inputs": inputs})

    assert response.status_code == 422
    assert "at most 64" in response.json()["detail"]


@pytest.fixture(scope="module")
def small_upload_client(index_dir: Path, encoder: Encoder) -> Iterator[TestClient]:
    """An app that accepts uploads of at most 2 KiB."""
    settings = make_settings(index_dir, max_upload_bytes=2048)
    with TestClient(create_app(settings, encoder=encoder)) as test_client:
        yield test_client


def test_oversized_upload_is_413(small_upload_client: TestClient) -> None:
    data = noise_png(64)
    assert len(data) > 2048
    response = small_upload_client.post(
        "/embed/image", files={"file": ("big.png", data, "image/png")}
    )

    assert response.status_code == 413
    assert "uploaded file is larger than the limit of 2048 bytes" in response.json()["detail"]


def test_oversized_base64_is_413(small_upload_client: TestClient) -> None:
    data = noise_png(40)
    assert 2048 < len(data) < 100_000
    response = small_upload_client.post("/embed", json={"inputs": [{"image": b64(data)}]})

    assert response.status_code == 413
    assert "base64 image is larger than the limit" in response.json()["detail"]


def test_small_upload_still_fits(small_upload_client: TestClient) -> None:
    response = small_upload_client.post(
        "/embed/image", files={"file": ("ok.png", image_bytes(size=8), "image/png")}
    )

    assert response.status_code == 200


def test_oversized_request_body_is_413_before_parsing(small_upload_client: TestClient) -> None:
    body = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    response = small_upload_client.post(
        "/embed", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert "request body is larger than the limit" in response.json()["detail"]


def test_oversized_chunked_body_is_413(small_upload_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": [{"text": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}]}'

    response = small_upload_client.post(
        "/embed", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert "request body is larger than the limit" in response.json()["detail"]


def test_concurrent_requests_get_the_same_vectors_as_sequential_ones(client: TestClient) -> None:
    payloads = [
        {"inputs": [{"text": f"dish number {i}"}, {"image": b64(image_bytes((i * 20, 90, 10)))}]}
        for i in range(8)
    ]
    sequential = [_vectors(client.post("/embed", json=p).json()) for p in payloads]
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda p: client.post("/embed", json=p), payloads))

    for expected, response in zip(sequential, responses, strict=True):
        assert response.status_code == 200
        np.testing.assert_allclose(_vectors(response.json()), expected, atol=1e-5)
