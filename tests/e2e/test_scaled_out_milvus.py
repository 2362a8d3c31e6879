"""Scaled-out serving on one machine: two ``mmsearch serve`` processes and one
``mmsearch worker`` share one Milvus (Milvus Lite's gRPC server, ``milvus-lite
server``) and one Redis. A re-index the worker builds, and an item change it applies
in place, become visible through both APIs."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from index.backends import IndexBackend
from index.build import build_snapshot
from index.manifest import Manifest
from models.datasets import open_dataset
from tests.index.tiny_encoder import TinyEncoder
from tests.polling import poll
from tests.service.helpers import ADMIN_TOKEN, make_settings
from tests.service.jobs_support import log_tail, running, service_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TINY_MMSEARCH = [sys.executable, "-m", "tests.e2e.tiny_mmsearch"]
START_TIMEOUT_S = 240  # three processes importing torch on a busy 2-core CPU
JOB_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture()
def milvus_server(tmp_path: Path) -> Iterator[str]:
    """``milvus-lite server`` on a free port: one Milvus that many processes share."""
    pytest.importorskip("milvus_lite", reason="the milvus extra is not installed")
    port = _free_port()
    log = tmp_path / "milvus.log"
    args = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(tmp_path / "milvus")]
    env = dict(os.environ)
    with running([*args, "--host", "127.0.0.1", "--port", str(port)], env, log) as server:
        uri = f"http://127.0.0.1:{port}"
        ready = poll(lambda: _listening(port), bool, timeout_s=60)
        assert ready and server.poll() is None, log_tail(log)
        yield uri


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


def _get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers=AUTH, timeout=10)


def _search(port: int, text: str) -> list[str]:
    body = {"query": {"text": text}, "k": 3}
    response = httpx.post(f"http://127.0.0.1:{port}/search", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return [match["id"] for match in response.json()["matches"]]


def _version(port: int) -> str | None:
    with contextlib.suppress(httpx.TransportError):
        response = _get(port, "/readyz")
        if response.status_code == 200:
            return str(response.json()["index_version"])
    return None


def _job(api: int, response: httpx.Response) -> dict[str, Any]:
    """The job a request queued, once finished (it must succeed)."""
    assert response.status_code == 202, response.text
    job_path = httpx.URL(response.headers["Location"]).path
    job = poll(
        lambda: _get(api, job_path).json(),
        lambda body: body["state"] in ("succeeded", "failed"),
        timeout_s=JOB_TIMEOUT_S,
    )
    assert job["state"] == "succeeded", job
    return job


def test_two_apis_and_a_worker_share_one_milvus(
    tmp_path: Path, milvus_server: str, clean_redis: str, kfood_sample: Path
) -> None:
    index_dir = tmp_path / "index"
    backend = IndexBackend("milvus", milvus_server)
    first = build_snapshot(
        open_dataset(kfood_sample, "kfood"), TinyEncoder(), index_dir, backend=backend
    )
    settings = make_settings(
        index_dir, redis_url=clean_redis, queue_name=f"scale-{uuid.uuid4().hex[:8]}"
    )
    env = {
        **service_env(settings),
        "MMSEARCH_INDEX_BACKEND": "milvus",
        "MMSEARCH_MILVUS_URI": milvus_server,
    }
    apis = [_free_port(), _free_port()]
    logs = [tmp_path / f"api-{i}.log" for i in range(2)] + [tmp_path / "worker.log"]
    with (
        running([*TINY_MMSEARCH, "serve", "--port", str(apis[0])], env, logs[0]),
        running([*TINY_MMSEARCH, "serve", "--port", str(apis[1])], env, logs[1]),
        running([*TINY_MMSEARCH, "worker"], env, logs[2]),
    ):
        for api, log in zip(apis, logs, strict=False):
            served = poll(lambda api=api: _version(api), bool, timeout_s=START_TIMEOUT_S)
            assert served == first.version, log_tail(log)

        reindex = {"source": str(kfood_sample), "format": "kfood"}
        response = httpx.post(
            f"http://127.0.0.1:{apis[0]}/admin/reindex", json=reindex, headers=AUTH, timeout=10
        )
        rebuilt = _job(apis[1], response)["index_version"]  # the job, seen through the other API
        assert rebuilt != first.version, log_tail(logs[2])
        for api in apis:
            assert (
                poll(lambda api=api: _version(api), lambda v: v == rebuilt, timeout_s=30) == rebuilt
            )

        body = {"texts": ["rice cake soup for the new year"], "label": "soup"}
        put = httpx.put(
            f"http://127.0.0.1:{apis[1]}/admin/items/new-1", json=body, headers=AUTH, timeout=10
        )
        changed = _job(apis[0], put)["index_version"]
        manifest = Manifest.read(index_dir / changed)  # in place: no new collection
        assert backend.milvus is not None and manifest.collection is not None
        assert manifest.collection == Manifest.read(index_dir / rebuilt).collection
        assert backend.milvus.count(manifest.collection) == manifest.n_vectors
        for api in apis:
            top = poll(
                lambda api=api: _search(api, "rice cake soup for the new year"),
                lambda ids: ids[:1] == ["new-1"],
                timeout_s=30,
            )
            assert top[:1] == ["new-1"], log_tail(logs[api == apis[1]])
            assert _version(api) == changed
