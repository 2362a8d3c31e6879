"""GET /classes, class matches beside search results, search by tag, hybrid ranking,
and prototype options through a real re-index job."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from rq.job import Job

from index.build import build_snapshot
from index.prototypes import PrototypeOptions
from index.snapshot import load_current
from models.types import CatalogRecord
from service.app import create_app
from service.jobs import RQJobQueue
from service.reindex import ReindexRequest
from tests.index.sample_records import make_records
from tests.index.tiny_encoder import TinyEncoder
from tests.polling import poll
from tests.service.conftest import TINY_ZERO_SHOT
from tests.service.helpers import ADMIN_TOKEN, make_settings


@pytest.fixture(scope="module")
def tiny_client(tiny_client_per_backend: TestClient) -> TestClient:
    """Every test here runs on the FAISS and on the Milvus backend."""
    return tiny_client_per_backend


def _search(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(body: dict[str, Any]) -> list[str]:
    return [match["id"] for match in body["matches"]]


def test_classes_lists_member_counts_and_zero_shot_classes(
    tiny_client: TestClient, tiny_records: list[CatalogRecord]
) -> None:
    response = tiny_client.get("/classes")

    assert response.status_code == 200, response.text
    body = response.json()
    counts = Counter(record.label for record in tiny_records)
    listed = {c["name"]: (c["members"], c["support"], c["zero_shot"]) for c in body["classes"]}
    assert listed == {
        **{name: (count, count, False) for name, count in counts.items()},
        "tteokbokki": (0, 0, True),
    }
    described = {c["name"]: c["description"] for c in body["classes"]}
    assert described["tteokbokki"] == TINY_ZERO_SHOT["tteokbokki"]
    assert body["index_version"] and body["class_field"] is None and body["shots"] is None


def test_search_returns_ranked_classes_beside_matches(tiny_client: TestClient) -> None:
    body = _search(tiny_client, query={"text": "pizza"}, k=3, top_classes=4)
    none = _search(tiny_client, query={"text": "pizza"}, k=3, top_classes=0)

    scores = [c["score"] for c in body["classes"]]
    assert len(body["classes"]) == 4 and scores == sorted(scores, reverse=True)
    assert set(body["classes"][0]) == {"name", "score", "members", "zero_shot"}
    assert none["classes"] == [] and len(none["matches"]) == 3


def test_a_zero_shot_class_is_found_from_its_name(tiny_client: TestClient) -> None:
    body = _search(tiny_client, query={"text": "tteokbokki spicy rice cakes"}, k=1)

    assert body["classes"][0]["name"] == "tteokbokki"
    assert body["classes"][0]["zero_shot"] is True


def test_search_by_tag_uses_the_class_prototype(
    tiny_client: TestClient, tiny_index_dir: Path, tiny_encoder: TinyEncoder
) -> None:
    prototype = load_current(tiny_index_dir, tiny_encoder.fingerprint).prototypes.vector_of("pizza")

    by_tag = _search(tiny_client, query={"tag": "pizza"}, kinds=["image"], k=6)
    by_vector = _search(tiny_client, query={"vector": prototype.tolist()}, kinds=["image"], k=6)

    assert _ids(by_tag) == _ids(by_vector) and len(_ids(by_tag)) == 6
    assert {match["kind"] for match in by_tag["matches"]} == {"image"}
    assert by_tag["classes"][0]["name"] == "pizza"


def test_search_by_an_unknown_tag_embeds_its_text(tiny_client: TestClient) -> None:
    by_tag = _search(tiny_client, query={"tag": "green_curry"}, kinds=["image"], k=5)
    by_text = _search(tiny_client, query={"text": "green curry"}, kinds=["image"], k=5)

    assert _ids(by_tag) == _ids(by_text)


def test_hybrid_ranking_reports_both_terms(tiny_client: TestClient) -> None:
    body = _search(tiny_client, query={"text": "pasta"}, k=5, rank="hybrid", class_weight=0.4)
    plain = _search(tiny_client, query={"text": "pasta"}, k=5)

    for match in body["matches"]:
        expected = 0.6 * match["item_score"] + 0.4 * match["class_score"]
        assert match["score"] == pytest.approx(expected, abs=1e-5)
        assert match["class_name"]
    assert all(m["item_score"] is None for m in plain["matches"])


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"rank": "best"}, "rank"),
        ({"class_weight": 1.5}, "class_weight"),
        ({"top_classes": -1}, ""),
    ],
)
def test_bad_ranking_fields_are_422(tiny_client: TestClient, extra: dict, expected: str) -> None:
    response = tiny_client.post("/search", json={"query": {"text": "a"}, **extra})

    assert response.status_code == 422
    assert expected in json.dumps(response.json()["detail"])


# --------------------------------------------------------------------------- re-index

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _wait_for_job(client: TestClient, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = poll(
        lambda: client.get(f"/admin/jobs/{job_id}", headers=AUTH).json(),
        lambda job: job["state"] in ("succeeded", "failed"),
        timeout_s=60,
    )
    return job


def _write_jsonl(root: Path, records: list[CatalogRecord]) -> Path:
    lines = [
        json.dumps({"id": r.id, "image": str(r.image_path), "label": r.label,
                    "metadata": r.metadata}, ensure_ascii=False)
        for r in records
    ]  # fmt: skip
    (root / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_reindex_rebuilds_prototypes_with_the_requested_options(
    tmp_path: Path, tiny_encoder: TinyEncoder, backend_overrides: dict[str, Any]
) -> None:
    # In-process jobs build with the app's own encoder: here the tiny one.
    index_dir = tmp_path / "index"
    settings = make_settings(index_dir, **backend_overrides)
    records = make_records(tmp_path / "a", 9)
    build_snapshot(records, tiny_encoder, index_dir, backend=settings.vector_backend())
    source = _write_jsonl(tmp_path, make_records(tmp_path / "b", 12, prefix="new"))
    # force: the new catalog has photo rows only, a third of the live snapshot's rows.
    body = {"source": str(source), "format": "jsonl", "class_field": "cuisine",
            "zero_shot_classes": {"한정식": "여러 반찬"}, "shots": 2, "force": True}  # fmt: skip
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        before = client.get("/classes").json()
        accepted = client.post("/admin/reindex", json=body, headers=AUTH)
        job = _wait_for_job(client, accepted.json()["job_id"])
        after = poll(
            lambda: client.get("/classes").json(),
            lambda classes: classes["index_version"] == job["index_version"],
            timeout_s=10,
        )
        assert after["index_version"] == job["index_version"], "the new snapshot did not go live"

    assert job["state"] == "succeeded", job
    assert {c["name"] for c in before["classes"]} == {r.label for r in make_records(tmp_path, 9)}
    assert after["class_field"] == "cuisine" and after["shots"] == 2
    assert {c["name"]: (c["members"], c["support"]) for c in after["classes"]} == {
        "한식": (4, 2), "양식": (4, 2), "중식": (4, 2), "한정식": (0, 0),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "expected"),
    [({"class_field": "1st"}, "class field"), ({"shots": 0}, "shots"), ({"text_weight": 3}, "")],
)
def test_reindex_with_bad_prototype_options_is_422(
    tmp_path: Path, tiny_client: TestClient, extra: dict, expected: str
) -> None:
    body = {"source": str(tmp_path), "format": "jsonl", **extra}

    response = tiny_client.post("/admin/reindex", json=body, headers=AUTH)

    assert response.status_code == 422
    assert expected in json.dumps(response.json()["detail"])


def test_rq_jobs_carry_the_prototype_options(clean_redis: str, tmp_path: Path) -> None:
    options = PrototypeOptions(class_field="level", shots=5, seed=2, zero_shot_classes={"x": None})
    queue = RQJobQueue(make_settings(tmp_path, redis_url=clean_redis))
    try:
        job_id = queue.enqueue_reindex(ReindexRequest(tmp_path, "kfood", "Flat", options))
    finally:
        queue.close()

    job = Job.fetch(job_id, connection=redis.Redis.from_url(clean_redis))
    assert ReindexRequest.from_json(job.kwargs["request_json"]).prototypes == options
