"""POST /tag: top-k classes and ranked free-form tags for an uploaded or base64 image."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models.types import CatalogRecord
from service.app import create_app
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import b64, bomb_png, detail_text, image_bytes, make_settings, noise_png


def _photo(record: CatalogRecord) -> bytes:
    assert record.image_path is not None
    return record.image_path.read_bytes()


def _upload(client: TestClient, data: bytes, **form: Any):
    return client.post("/tag", files={"file": ("dish.png", data, "image/png")}, data=form)


def test_upload_returns_the_top_k_classes(
    tiny_client: TestClient, tiny_records: list[CatalogRecord]
) -> None:
    response = _upload(tiny_client, _photo(tiny_records[4]), k="3")

    assert response.status_code == 200, response.text
    body = response.json()
    scores = [c["score"] for c in body["classes"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert body["tags"] == [] and body["index_version"] and body["took_ms"] >= 0


def test_upload_and_base64_agree(
    tiny_client: TestClient, tiny_records: list[CatalogRecord]
) -> None:
    photo = _photo(tiny_records[7])
    tags = ["pizza", "kimchi stew", "salad"]

    upload = _upload(tiny_client, photo, k="2", tags=tags).json()
    inline = tiny_client.post("/tag", json={"image": b64(photo), "k": 2, "tags": tags}).json()

    assert upload["classes"] == inline["classes"]
    assert upload["tags"] == inline["tags"]


def test_free_form_tags_are_ranked_by_text_similarity(
    tiny_client: TestClient, tiny_records: list[CatalogRecord], tiny_encoder: TinyEncoder
) -> None:
    photo = _photo(tiny_records[2])
    tags = ["spicy", "sweet", "crunchy", "soup"]

    body = tiny_client.post("/tag", json={"image": b64(photo), "k": 4, "tags": tags}).json()

    image = tiny_encoder.encode_images([Image.open(io.BytesIO(photo)).convert("RGB")])[0]
    expected = tiny_encoder.encode_texts(tags) @ image
    ranked = sorted(zip(tags, expected, strict=True), key=lambda pair: -pair[1])
    assert [t["tag"] for t in body["tags"]] == [tag for tag, _ in ranked]
    assert [t["score"] for t in body["tags"]] == pytest.approx([s for _, s in ranked], abs=1e-5)


def test_class_scores_are_prototype_similarities(
    tiny_client: TestClient, tiny_records: list[CatalogRecord]
) -> None:
    photo = _photo(tiny_records[0])

    tagged = _upload(tiny_client, photo, k="5").json()
    searched = tiny_client.post(
        "/search", json={"query": {"image": b64(photo)}, "top_classes": 5}
    ).json()

    assert tagged["classes"] == searched["classes"]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "expected"),
    [
        ({"files": {"file": ("d.jpg", b"\xff\xd8 not a jpeg", "image/jpeg")}}, 422, "image"),
        ({"files": {"file": ("d.png", b"", "image/png")}}, 422, "empty"),
        ({"files": {"file": ("d.png", bomb_png(), "image/png")}}, 413, "pixels"),
        ({"files": {"other": ("d.png", image_bytes(), "image/png")}}, 422, "'file'"),
        ({"files": {"file": ("d.png", image_bytes(), "image/png")}, "data": {"k": "0"}}, 422, "k"),
        ({"files": {"file": ("d.png", image_bytes(), "image/png")}, "data": {"k": "x"}}, 422, "k"),
        ({"files": {"file": ("d.png", image_bytes(), "image/png")}, "data": {"tags": ""}}, 422, ""),
        ({"json": {"image": "bm90IGFuIGltYWdl"}}, 422, "image"),
        ({"json": {"image": ""}}, 422, "image must not be empty"),
        ({"json": {"image": b64(image_bytes()), "k": 101}}, 422, "k"),
        ({"json": {"image": b64(image_bytes()), "tags": [" "]}}, 422, "tag must not be empty"),
        ({"json": {"image": b64(image_bytes()), "colour": "red"}}, 422, "colour"),
        ({"json": {"k": 3}}, 422, "image"),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 422, "JSON"),
        ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415, "multipart"),
        (
            {
                "content": b"--x\r\nbroken",
                "headers": {"Content-Type": "multipart/form-data"},  # no boundary
            },
            400,
            "boundary",
        ),
    ],
)
def test_bad_input_is_a_4xx_with_a_json_detail(
    tiny_client: TestClient, request_kwargs: dict[str, Any], status: int, expected: str
) -> None:
    response = tiny_client.post("/tag", **request_kwargs)

    assert response.status_code == status, response.text
    assert expected in detail_text(response)


def test_too_many_tags_is_422(tiny_client: TestClient) -> None:
    tags = [f"tag {i}" for i in range(65)]  # MMSEARCH_MAX_INPUTS is 64

    response = tiny_client.post("/tag", json={"image": b64(image_bytes()), "tags": tags})

    assert response.status_code == 422
    assert "at most 64" in response.json()["detail"]


@pytest.fixture()
def small_upload_client(tiny_index_dir: Path, tiny_encoder: TinyEncoder) -> Iterator[TestClient]:
    settings = make_settings(tiny_index_dir, max_upload_bytes=20_000)
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        yield client


def test_oversized_uploads_are_413(small_upload_client: TestClient) -> None:
    big = noise_png(100)  # about 30 kB
    assert len(big) > 20_000

    upload = _upload(small_upload_client, big)
    inline = small_upload_client.post("/tag", json={"image": b64(big)})

    assert upload.status_code == 413 and "larger than the limit" in upload.json()["detail"]
    assert inline.status_code == 413


def test_openapi_documents_both_bodies(tiny_client: TestClient) -> None:
    operation = tiny_client.get("/openapi.json").json()["paths"]["/tag"]["post"]

    content = operation["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}
    assert "file" in content["multipart/form-data"]["schema"]["properties"]
    assert {"image", "k", "tags"} <= set(content["application/json"]["schema"]["properties"])
