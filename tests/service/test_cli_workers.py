"""``mmsearch serve --workers N`` / MMSEARCH_WORKERS: uvicorn worker processes."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from service.cli import main
from service.commands.serving import APP_FACTORY
from tests.service.helpers import make_settings
from tests.service.jobs_support import log_tail, mmsearch_command, running, service_env

START_TIMEOUT_S = 240  # two processes importing torch on a busy 2-core CPU


@pytest.fixture()
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``mmsearch serve`` hands uvicorn.run, instead of serving."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda **options: calls.append(options))
    for name in ("MMSEARCH_WORKERS", "MMSEARCH_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_workers_without_redis_are_refused(
    uvicorn_calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--workers", "2"]) == 2
    assert "MMSEARCH_WORKERS=2 needs MMSEARCH_REDIS_URL" in capsys.readouterr().err
    assert uvicorn_calls == []


def test_workers_on_milvus_lite_are_refused(
    uvicorn_calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("MMSEARCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("MMSEARCH_INDEX_BACKEND", "milvus")
    monkeypatch.setenv("MMSEARCH_MILVUS_URI", str(tmp_path / "milvus.db"))
    assert main(["serve", "--workers", "2"]) == 2
    error = capsys.readouterr().err
    assert "Milvus Lite" in error and "milvus-lite server" in error
    assert uvicorn_calls == []


@pytest.mark.parametrize("command", [["serve"], ["worker", "--burst"]])
def test_milvus_lite_with_redis_jobs_is_refused(
    command: list[str],
    uvicorn_calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # One process: but jobs run in mmsearch worker processes, which cannot open the file.
    monkeypatch.setenv("MMSEARCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("MMSEARCH_INDEX_BACKEND", "milvus")
    monkeypatch.setenv("MMSEARCH_MILVUS_URI", str(tmp_path / "milvus.db"))
    assert main(command) == 2
    assert "opens in one process only" in capsys.readouterr().err
    assert uvicorn_calls == []


def test_workers_on_a_milvus_server_reach_uvicorn(
    uvicorn_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any number of processes share a server, Milvus Lite's own (milvus-lite server) too.
    monkeypatch.setenv("MMSEARCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("MMSEARCH_INDEX_BACKEND", "milvus")
    monkeypatch.setenv("MMSEARCH_MILVUS_URI", "http://127.0.0.1:19530")
    assert main(["serve", "--workers", "2"]) == 0
    [options] = uvicorn_calls
    assert options["workers"] == 2


def test_workers_from_the_environment_reach_uvicorn(
    uvicorn_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMSEARCH_WORKERS", "3")
    monkeypatch.setenv("MMSEARCH_REDIS_URL", "redis://127.0.0.1:6379/15")

    assert main(["serve", "--port", "8123"]) == 0

    [options] = uvicorn_calls
    assert (options["app"], options["factory"], options["workers"]) == (APP_FACTORY, True, 3)
    config = uvicorn.Config(**options)
    assert (config.workers, config.port) == (3, 8123)


def test_one_worker_serves_the_app_in_this_process(
    uvicorn_calls: list[dict[str, Any]],
) -> None:
    assert main(["serve"]) == 0

    [options] = uvicorn_calls
    assert "workers" not in options and not isinstance(options["app"], str)


def test_workers_below_one_are_a_usage_error(uvicorn_calls: list[dict[str, Any]]) -> None:
    assert main(["serve", "--workers", "0"]) == 2
    assert uvicorn_calls == []


def test_two_workers_answer_healthz(clean_redis: str, tmp_path: Path) -> None:
    port = _free_port()
    env = service_env(make_settings(tmp_path / "index", redis_url=clean_redis))
    env["MMSEARCH_WORKERS"] = "2"
    log = tmp_path / "serve.log"
    serve = [*mmsearch_command(), "serve", "--port", str(port)]
    with running(serve, env, log) as process:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and len(_started_pids(log)) < 2:
            assert process.poll() is None, log_tail(log)
            time.sleep(0.5)
        assert len(_started_pids(log)) == 2, log_tail(log)
        assert _healthz(port) == 200, log_tail(log)


def _started_pids(log: Path) -> set[str]:
    """Worker processes that finished their app startup (lifespan) so far."""
    text = log.read_text(errors="replace") if log.exists() else ""
    started = re.findall(
        r"\[(\d+)\].*Started server process|Started server process \[(\d+)\]", text
    )
    pids = {a or b for a, b in started}
    return pids if text.count("Application startup complete") >= len(pids) else set()


def _healthz(port: int) -> int:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
