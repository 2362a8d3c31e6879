"""Admin routes: token checks, request checks and a real in-process re-index job."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.encoders import Encoder
from service.app import create_app
from service.schemas import ReindexIn
from tests.polling import poll
from tests.service.helpers import ADMIN_TOKEN, make_settings, wait_for

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DEADLINE_S = 60.0


@pytest.fixture()
def admin_client(
    tmp_path: Path, encoder: Encoder, backend_overrides: dict[str, Any]
) -> Iterator[TestClient]:
    """An app on an empty index directory of its own, with the thread job backend, on
    each index backend."""
    settings = make_settings(tmp_path / "index", **backend_overrides)
    with TestClient(create_app(settings, encoder=encoder)) as client:
        yield client


def _reindex(client: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None):
    return client.post("/admin/reindex", json=body, headers=headers or {})


def test_admin_is_403_when_no_token_is_configured(tmp_path: Path, encoder: Encoder) -> None:
    settings = make_settings(tmp_path, admin_token=None)
    with TestClient(create_app(settings, encoder=encoder)) as client:
        reindex = _reindex(client, {"source": str(tmp_path), "format": "kfood"}, AUTH)
        job = client.get("/admin/jobs/some-job", headers=AUTH)

    for response in (reindex, job):
        assert response.status_code == 403
        assert "set MMSEARCH_ADMIN_TOKEN" in response.json()["detail"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer wrong-token"}, "invalid admin token"),
        ({"Authorization": f"Basic {ADMIN_TOKEN}"}, "missing bearer token"),
    ],
)
def test_admin_without_the_right_token_is_401(
    admin_client: TestClient, kfood_sample: Path, headers: dict[str, str], expected: str
) -> None:
    reindex = _reindex(admin_client, {"source": str(kfood_sample), "format": "kfood"}, headers)
    job = admin_client.get("/admin/jobs/some-job", headers=headers)

    for response in (reindex, job):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert expected in response.json()["detail"]


def test_unknown_format_is_422_listing_the_known_ones(
    admin_client: TestClient, kfood_sample: Path
) -> None:
    response = _reindex(admin_client, {"source": str(kfood_sample), "format": "csv"}, AUTH)

    assert response.status_code == 422
    assert "unknown format 'csv'" in response.json()["detail"]
    assert "kfood" in response.json()["detail"]


def test_missing_source_is_422(admin_client: TestClient, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    response = _reindex(admin_client, {"source": str(missing), "format": "kfood"}, AUTH)

    assert response.status_code == 422
    assert f"source '{missing}' does not exist" in response.json()["detail"]


def test_bad_reindex_body_is_422(admin_client: TestClient) -> None:
    response = _reindex(admin_client, {"format": "kfood"}, AUTH)

    assert response.status_code == 422
    assert "source" in response.text


def test_factory_defaults_to_auto_and_a_bad_one_is_422(
    admin_client: TestClient, kfood_sample: Path, backend_overrides: dict[str, Any]
) -> None:
    body = {"source": str(kfood_sample), "format": "kfood", "factory": "Bogus42"}
    response = _reindex(admin_client, body, AUTH)

    assert response.status_code == 422
    assert "factory 'Bogus42'" in response.json()["detail"]
    if backend_overrides:  # a FAISS-only factory is refused by the milvus backend alone
        response = _reindex(admin_client, body | {"factory": "HNSW32"}, AUTH)
        assert response.status_code == 422
        assert "milvus backend builds 'Flat'" in response.json()["detail"]
    assert ReindexIn(source="x", format="kfood").factory == "auto"
    accepted = _reindex(admin_client, body | {"factory": "auto"}, AUTH)
    assert accepted.status_code == 202
    assert _wait_for_job(admin_client, accepted.headers["Location"])["state"] == "succeeded"


def test_unknown_job_is_404(admin_client: TestClient) -> None:
    response = admin_client.get("/admin/jobs/no-such-job", headers=AUTH)

    assert response.status_code == 404
    assert "no-such-job" in response.json()["detail"]


def _wait_for_job(client: TestClient, location: str) -> dict[str, Any]:
    def finished(job: dict[str, Any]) -> bool:
        assert 0.0 <= job["progress"] <= 1.0
        return job["state"] in ("succeeded", "failed")

    job: dict[str, Any] = poll(
        lambda: client.get(location, headers=AUTH).json(), finished, timeout_s=DEADLINE_S
    )
    return job


def test_reindex_job_succeeds_and_the_new_snapshot_goes_live(
    admin_client: TestClient, kfood_sample: Path
) -> None:
    assert admin_client.get("/readyz").status_code == 503

    accepted = _reindex(admin_client, {"source": str(kfood_sample), "format": "kfood"}, AUTH)

    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["state"] == "queued"
    location = accepted.headers["Location"]
    assert location.endswith(f"/admin/jobs/{body['job_id']}")
    job = _wait_for_job(admin_client, location)
    assert job["state"] == "succeeded", job
    assert job["progress"] == 1.0
    assert job["error"] is None
    ready = wait_for(admin_client, "/readyz", lambda response: response.status_code == 200)
    assert ready.status_code == 200
    assert ready.json()["index_version"] == job["index_version"]
    assert ready.json()["items"] == 12
    assert job["changes"]["items_embedded"] == 12 and job["changes"]["items_reused"] == 0


def test_second_reindex_of_the_same_source_reuses_every_vector(
    admin_client: TestClient, kfood_sample: Path
) -> None:
    body = {"source": str(kfood_sample), "format": "kfood"}
    first = _wait_for_job(admin_client, _reindex(admin_client, body, AUTH).headers["Location"])
    second = _wait_for_job(admin_client, _reindex(admin_client, body, AUTH).headers["Location"])

    assert first["state"] == second["state"] == "succeeded", (first, second)
    n_vectors = first["changes"]["vectors_embedded"]
    assert n_vectors >= 12
    assert second["changes"] == {
        "items_embedded": 0,
        "vectors_embedded": 0,
        "items_reused": 12,
        "vectors_reused": n_vectors,
        "items_removed": 0,
    }
    assert second["index_version"] != first["index_version"]


def test_sources_outside_the_data_roots_are_refused(
    tiny_encoder: Encoder, kfood_sample: Path, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    shutil.copytree(kfood_sample, allowed / "kfood")
    (allowed / "link").symlink_to(kfood_sample, target_is_directory=True)
    settings = make_settings(tmp_path / "index", data_roots=[allowed])
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        for source in (kfood_sample, allowed / "link"):  # the link leads out of the root
            response = _reindex(client, {"source": str(source), "format": "kfood"}, AUTH)
            assert response.status_code == 422
            assert "outside the allowed data roots" in response.json()["detail"]
        inside = {"source": str(allowed / "kfood"), "format": "kfood"}
        assert _reindex(client, inside, AUTH).status_code == 202
