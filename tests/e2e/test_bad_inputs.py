"""The bad inputs of issue #18, replayed over real HTTP against a real uvicorn.

``scripts/probe_inputs.py`` holds the cases (it also runs against any deployed
server); here it runs against the tiny-encoder server of ``tests.e2e.tiny_server``.
Every answer must be a 4xx JSON body and ``/healthz`` must stay 200 after each, on
both HTTP stacks of ``mmsearch serve`` (``MMSEARCH_HTTP``): malformed HTTP never reaches
the app, so each parser's protocol class answers it itself (``service/protocol.py``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from types import ModuleType

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.e2e.test_end_to_end import free_port
from tests.service.helpers import ADMIN_TOKEN
from tests.service.jobs_support import log_tail, running

START_TIMEOUT_S = 120

pytestmark = pytest.mark.e2e


def probe_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "probe_inputs", REPO_ROOT / "scripts" / "probe_inputs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=["httptools", "h11"])
def server_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("tiny-server")
    port = free_port()
    log = workdir / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    args = [sys.executable, "-m", "tests.e2e.tiny_server", str(port), str(workdir), request.param]
    with running(args, {**env, "PYTHONPATH": str(REPO_ROOT)}, log) as process:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, log_tail(log)
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server not ready\n{log_tail(log)}"
            time.sleep(0.3)
        yield url


def test_every_bad_input_is_a_json_4xx_and_the_server_stays_up(server_url: str) -> None:
    results = probe_module().replay(server_url, ADMIN_TOKEN)

    failures = {name: failure for name, failure in results.items() if failure}
    assert len(results) >= 20
    assert failures == {}


def test_the_answers_say_what_was_wrong(server_url: str) -> None:
    surrogate = httpx.post(
        f"{server_url}/search",
        content=b'{"query": {"item_id": "\\ud800"}}',
        headers={"content-type": "application/json"},
    )
    utf8 = httpx.post(
        f"{server_url}/search",
        content=b'{"query": {"text": "\xff"}}',
        headers={"content-type": "application/json"},
    )

    assert surrogate.status_code == 422 and "surrogate" in surrogate.text
    assert utf8.status_code == 422 and utf8.json()["detail"][0]["type"] == "json_invalid"
