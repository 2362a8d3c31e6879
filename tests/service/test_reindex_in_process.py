"""The straight re-index path in the embedded (no Redis) mode, through the app.

One request type and one validation for route, CLI and worker; the API's own
model builds the snapshot (one copy in memory); ``succeeded`` means this process
serves it; old snapshots are pruned down to ``keep_snapshots`` beside the live one.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import service.state
import service.tasks
from index.build import ShrinkRefusedError
from index.layout import list_versions, read_current
from service.app import create_app
from service.commands import CommandInputError
from service.commands.indexing import index_catalog
from service.reindex import InvalidReindexError, ReindexRequest, reindex
from service.state import AppState
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import ADMIN_TOKEN, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MODEL = "openclip:counted-tiny"  # a spec of its own: the encoder cache of other tests is spared
DEADLINE_S = 60.0


class CountedEncoders:
    """Stands in for the model registry: counts every encoder it builds."""

    def __init__(self) -> None:
        self.built = 0

    def __call__(self, spec: str, **_options: Any) -> TinyEncoder:
        self.built += 1
        return TinyEncoder(dim=32, seed=0)


@pytest.fixture()
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountedEncoders]:
    factory = CountedEncoders()
    monkeypatch.setattr(service.state, "load_encoder", factory)
    monkeypatch.setattr(service.tasks, "load_encoder", factory)
    service.tasks._load_encoder_once.cache_clear()
    yield factory
    service.tasks._load_encoder_once.cache_clear()


def _wait_until(check: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {DEADLINE_S:.0f}s"
        time.sleep(0.02)


def _reindex_until_finished(client: TestClient, source: Path) -> dict[str, Any]:
    accepted = client.post(
        "/admin/reindex", json={"source": str(source), "format": "kfood"}, headers=AUTH
    )
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["Location"]
    while True:
        job = client.get(location, headers=AUTH).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.02)


def test_five_reindexes_one_model_served_when_succeeded_disk_bounded(
    tmp_path: Path, kfood_sample: Path, counted: CountedEncoders
) -> None:
    # No CURRENT polling to speak of: only the job itself can make the API swap in time.
    settings = make_settings(
        tmp_path / "index", model=MODEL, reload_interval_s=3600, keep_snapshots=1
    )
    app = create_app(settings)  # loads its model through the registry, in the background
    with TestClient(app) as client:
        state: AppState = app.state.mmsearch
        _wait_until(lambda: state.live is not None, "model load")
        versions = []
        held = None
        for round_ in range(5):
            job = _reindex_until_finished(client, kfood_sample)
            assert job["state"] == "succeeded", job
            # succeeded => served: read at once, no waiting for a poll or an event.
            assert client.get("/readyz").json()["index_version"] == job["index_version"]
            versions.append(job["index_version"])
            if round_ == 0:
                held = state.current_snapshot()  # a request still using the first version
            on_disk = list_versions(settings.index_dir)
            assert len(on_disk) <= 1 + settings.keep_snapshots + 1  # + the held one
        assert held is not None and versions[0] in list_versions(settings.index_dir)
        del held  # the request ends: the next publish may prune its version
        last = _reindex_until_finished(client, kfood_sample)
        assert last["state"] == "succeeded", last

    assert counted.built == 1  # the API's model did every build
    assert list_versions(settings.index_dir) == sorted([versions[-1], last["index_version"]])
    assert read_current(settings.index_dir) == last["index_version"]
    assert not [p for p in settings.index_dir.iterdir() if p.name.startswith(".staging-")]


BAD_REQUESTS = [
    ({"format": "csv"}, "unknown format 'csv'; known formats are"),
    ({"source": "/no/such/catalog"}, "source '/no/such/catalog' does not exist"),
    ({"factory": "Bogus42"}, "factory 'Bogus42': "),
]


@pytest.mark.parametrize(("change", "expected"), BAD_REQUESTS)
def test_route_cli_and_worker_refuse_a_bad_request_with_the_same_message(
    tmp_path: Path,
    kfood_sample: Path,
    tiny_encoder: TinyEncoder,
    counted: CountedEncoders,
    change: dict[str, str],
    expected: str,
) -> None:
    settings = make_settings(tmp_path / "index", model=MODEL)
    fields = {"source": str(kfood_sample), "format": "kfood", "factory": "Flat", **change}
    request = ReindexRequest(Path(fields["source"]), fields["format"], fields["factory"])

    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        route = client.post("/admin/reindex", json=fields, headers=AUTH)
    with pytest.raises(CommandInputError) as cli:
        index_catalog(
            request.source, request.format, settings, factory=request.factory, batch_size=8
        )
    with pytest.raises(InvalidReindexError) as worker:
        service.tasks.reindex_job(request.to_json(), settings.model_dump_json())

    assert route.status_code == 422
    assert route.json()["detail"] == str(cli.value) == str(worker.value)
    assert str(worker.value).startswith(expected)
    assert read_current(settings.index_dir) is None


def test_a_request_survives_its_json_round_trip_request_time_included() -> None:
    request = ReindexRequest(Path("/data/kfood"), "kfood", "HNSW32")
    assert ReindexRequest.from_json(request.to_json()) == request
    forced = ReindexRequest(Path("/data/kfood"), "kfood", force=True)
    assert ReindexRequest.from_json(forced.to_json()) == forced


def test_a_reindex_that_loses_most_vectors_is_refused_unless_forced(
    kfood_sample: Path, tmp_path: Path, tiny_encoder: TinyEncoder
) -> None:
    settings = make_settings(tmp_path / "index")
    full = reindex(ReindexRequest(kfood_sample, "kfood"), settings, tiny_encoder)
    photoless = shutil.copytree(kfood_sample, tmp_path / "photoless")
    shutil.rmtree(photoless / "images")  # every photo gone: a recipe-only index
    with pytest.raises(ShrinkRefusedError, match="would keep 12 of the live snapshot's 24"):
        reindex(ReindexRequest(photoless, "kfood"), settings, tiny_encoder)
    assert read_current(settings.index_dir) == full.version  # the live index is untouched
    assert len(list_versions(settings.index_dir)) == 1  # and the refused build left nothing
    forced = reindex(ReindexRequest(photoless, "kfood", force=True), settings, tiny_encoder)
    assert read_current(settings.index_dir) == forced.version
    assert forced.n_vectors == 12


def test_the_tuning_settings_reach_the_build(kfood_sample: Path, tmp_path: Path) -> None:
    """MMSEARCH_FLAT_MAX_VECTORS / MMSEARCH_TARGET_RECALL: a lowered Flat budget makes
    auto choose HNSW for the 24-row sample, tuned to the configured target."""
    settings = make_settings(tmp_path / "index", flat_max_vectors=1, target_recall=0.9)

    manifest = reindex(ReindexRequest(kfood_sample, "kfood"), settings, TinyEncoder(dim=32))

    assert (manifest.factory, manifest.target_recall) == ("HNSW32", 0.9)
    assert manifest.ef_search is not None and manifest.recall_queries == 24
