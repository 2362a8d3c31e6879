"""``MMSEARCH_HTTP``: the HTTP stack ``mmsearch serve`` hands uvicorn.

Both stacks serving real requests, malformed ones included, are in
``tests/e2e/test_bad_inputs.py``; here (``service/http_stack.py``), which one each setting picks.
"""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn

from service import http_stack
from service.cli import main
from service.protocol import JsonErrorH11Protocol
from service.protocol_httptools import JsonErrorHttpToolsProtocol


@pytest.fixture()
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``mmsearch serve`` hands uvicorn.run, instead of serving."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda **options: calls.append(options))
    for name in ("MMSEARCH_WORKERS", "MMSEARCH_REDIS_URL", "MMSEARCH_HTTP"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_the_default_is_httptools_on_uvloop(uvicorn_calls: list[dict[str, Any]]) -> None:
    assert main(["serve"]) == 0

    [options] = uvicorn_calls
    assert (options["http"], options["loop"]) == (JsonErrorHttpToolsProtocol, "uvloop")


def test_h11_forces_the_pure_python_stack(
    uvicorn_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMSEARCH_HTTP", "h11")
    assert main(["serve"]) == 0

    [options] = uvicorn_calls
    # asyncio too: uvicorn's own "auto" loop would take uvloop whenever it is installed.
    assert (options["http"], options["loop"]) == (JsonErrorH11Protocol, "asyncio")


def test_auto_falls_back_to_h11_without_the_fast_stack(
    uvicorn_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_stack, "fast_stack_available", lambda: False)
    assert main(["serve"]) == 0

    [options] = uvicorn_calls
    assert options["http"] is JsonErrorH11Protocol


def test_httptools_without_the_packages_is_a_clear_error(
    uvicorn_calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(http_stack, "fast_stack_available", lambda: False)
    monkeypatch.setenv("MMSEARCH_HTTP", "httptools")

    assert main(["serve"]) == 2
    assert "pip install httptools uvloop" in capsys.readouterr().err
    assert uvicorn_calls == []
