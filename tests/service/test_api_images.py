"""GET /images/{id}: serves the photo the catalog names for an item, and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from index.build import build_snapshot
from models.datasets import open_dataset
from models.types import CatalogRecord
from service.app import create_app
from tests.conftest import write_kfood_sample
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import make_settings

TEXT_ONLY = CatalogRecord(id="notes/plain", texts=("a dish described in words only",))


@pytest.fixture(scope="module")
def photos(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four kfood recipes with their photos, in a folder this module may change."""
    return write_kfood_sample(shared_data / "kfood", tmp_path_factory.mktemp("kfood4"), 4)


@pytest.fixture(scope="module")
def images_client(
    photos: Path, tmp_path_factory: pytest.TempPathFactory, tiny_encoder: TinyEncoder
) -> Iterator[TestClient]:
    index_dir = tmp_path_factory.mktemp("images-index")
    records = [*open_dataset(photos, "kfood"), TEXT_ONLY]
    build_snapshot(records, tiny_encoder, index_dir)
    with TestClient(create_app(make_settings(index_dir), encoder=tiny_encoder)) as client:
        yield client


def assert_not_found(response, item_id: str) -> None:  # type: ignore[no-untyped-def]
    """A 404 from this route (not an unmatched path), naming no server path."""
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert repr(item_id) in detail
    assert "/tmp" not in detail and "kfood4" not in detail


def test_serves_the_indexed_photo(images_client: TestClient, photos: Path) -> None:
    response = images_client.get("/images/kfood-2")

    assert response.status_code == 200
    assert response.content == (photos / "images" / "kfood-2.jpg").read_bytes()
    assert response.headers["content-type"] == "image/jpeg"
    assert "max-age" in response.headers["cache-control"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_unknown_item_is_404(images_client: TestClient) -> None:
    response = images_client.get("/images/no-such-dish")

    assert_not_found(response, "no-such-dish")
    assert response.json() == {"detail": "no item with id 'no-such-dish' in the current index"}


def test_item_without_a_photo_is_404(images_client: TestClient) -> None:
    response = images_client.get("/images/notes/plain")

    assert_not_found(response, "notes/plain")
    assert "has no image" in response.json()["detail"]


# Encoded so the client sends them as they are: the route sees the decoded id.
@pytest.mark.parametrize(
    ("raw", "item_id"),
    [
        ("..%2F..%2Fetc%2Fpasswd", "../../etc/passwd"),
        ("%2e%2e%2F%2e%2e%2Fetc%2Fpasswd", "../../etc/passwd"),
        ("%2Fetc%2Fpasswd", "/etc/passwd"),
        ("kfood-1%2F..%2F..%2Fimages%2Fkfood-1.jpg", "kfood-1/../../images/kfood-1.jpg"),
    ],
)
def test_paths_in_the_id_reach_no_file(images_client: TestClient, raw: str, item_id: str) -> None:
    assert_not_found(images_client.get(f"/images/{raw}"), item_id)


def test_the_photo_path_itself_is_not_an_id(images_client: TestClient, photos: Path) -> None:
    path = str((photos / "images" / "kfood-1.jpg").absolute())

    response = images_client.get("/images/" + path.replace("/", "%2F"))

    assert response.status_code == 404
    assert response.json() == {"detail": f"no item with id {path!r} in the current index"}


def test_deleted_photo_is_404(images_client: TestClient, photos: Path) -> None:
    (photos / "images" / "kfood-4.jpg").unlink()

    response = images_client.get("/images/kfood-4")

    assert_not_found(response, "kfood-4")
    assert "no longer available" in response.json()["detail"]
