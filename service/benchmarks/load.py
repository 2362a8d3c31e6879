"""Servers started as subprocesses, and the closed-loop load that drives them.

Each client thread keeps one keep-alive HTTP/1.1 connection (``http.client``: no
client library's own overhead in the figures) and sends its next request when the
previous answer is read. QPS is requests per second of wall time after a warm-up.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

WARMUP_S = 1.0
START_TIMEOUT_S = 600.0
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class Server:
    label: str
    port: int
    process: subprocess.Popen[bytes]

    def get(self, path: str) -> tuple[int, dict[str, object]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def wait_until(self, ready: Callable[[int, dict[str, object]], bool]) -> dict[str, object]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server {self.label} exited with {self.process.returncode}")
            try:
                status, body = self.get("/readyz")
                if ready(status, body):
                    return body
            except (OSError, http.client.HTTPException, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server {self.label} was not ready in time")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


@dataclass(frozen=True)
class Code:
    """One server to measure: its column label, its checkout, how it is sent vectors."""

    label: str
    folder: Path
    vector_encoding: str = "json"  # "base64": query.vector_b64 instead of a float list
    http: str | None = None  # MMSEARCH_HTTP of its server; None: the environment's
    env: tuple[tuple[str, str], ...] = ()  # more variables for its server (--code-env)


@dataclass(frozen=True)
class ServerSpec:
    model: str  # MMSEARCH_MODEL
    workers: int  # MMSEARCH_WORKERS
    module: str  # ``python -m MODULE serve`` starts it: service.cli is mmsearch itself


def start_server(code: Code, index_dir: Path, port: int, spec: ServerSpec) -> Server:
    """``mmsearch serve`` from the checkout ``code.folder`` (its own PYTHONPATH), on
    ``index_dir``."""
    http = {"MMSEARCH_HTTP": code.http} if code.http else {}
    env = {
        **os.environ,
        **http,
        "PYTHONPATH": str(code.folder),
        "MMSEARCH_MODEL": spec.model,
        "MMSEARCH_DEVICE": "cpu",
        "MMSEARCH_INDEX_DIR": str(index_dir),
        "MMSEARCH_RELOAD_INTERVAL_S": "0.5",
        "MMSEARCH_LOG_LEVEL": "warning",
        "MMSEARCH_WORKERS": str(spec.workers),
        **dict(code.env),
    }
    command = [sys.executable, "-m", spec.module, "serve", "--port", str(port)]
    process = subprocess.Popen(command, cwd=code.folder, env=env)
    return Server(code.label, port, process)


@dataclass(frozen=True)
class Cell:
    qps: float
    p50_ms: float
    p99_ms: float


def run_load(
    make_worker: Callable[[], Callable[[int], None]], concurrency: int, seconds: float
) -> Cell:
    """``concurrency`` threads, each calling its worker with query numbers until time is up."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    go = threading.Barrier(concurrency + 1)
    stop_at = [0.0, 0.0]  # warm-up end, measurement end

    def loop(slot: int) -> None:
        work = make_worker()
        go.wait()
        n = slot
        while (now := time.perf_counter()) < stop_at[1]:
            work(n)
            if now >= stop_at[0]:
                latencies[slot].append(time.perf_counter() - now)
            n += concurrency

    threads = [threading.Thread(target=loop, args=(slot,)) for slot in range(concurrency)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + WARMUP_S
    stop_at[1] = stop_at[0] + seconds
    go.wait()
    for thread in threads:
        thread.join()
    done = np.concatenate([np.asarray(slot) for slot in latencies]) * 1000
    return Cell(done.size / seconds, float(np.percentile(done, 50)), float(np.percentile(done, 99)))


def raw_worker(
    index: faiss.Index, queries: np.ndarray, k: int
) -> Callable[[], Callable[[int], None]]:
    def make() -> Callable[[int], None]:
        def work(n: int) -> None:
            i = n % len(queries)
            index.search(queries[i : i + 1], k)

        return work

    return make


def http_worker(
    port: int, path: str, bodies: list[bytes] | None = None
) -> Callable[[], Callable[[int], None]]:
    """POST each body in turn to ``path`` (GET when there are no bodies); a non-200 fails."""

    def make() -> Callable[[int], None]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def work(n: int) -> None:
            if bodies is None:
                connection.request("GET", path)
            else:
                connection.request("POST", path, body=bodies[n % len(bodies)], headers=JSON_HEADERS)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(f"{path} answered {response.status}: {payload[:200]!r}")

        return work

    return make


def post_json(port: int, path: str, body: bytes) -> dict[str, object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", path, body=body, headers=JSON_HEADERS)
        return dict(json.loads(connection.getresponse().read()))
    finally:
        connection.close()


@contextlib.contextmanager
def sampled(server: Server, out_dir: Path | None, name: str) -> Iterator[None]:
    """py-spy samples the server (all threads, collapsed stacks) while the load runs."""
    if out_dir is None:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{server.label}-{name}.txt"
    command = ["py-spy", "record", "--pid", str(server.process.pid), "--format", "raw"]
    spy = subprocess.Popen([*command, "--output", str(out), "--rate", "250", "--nonblocking"])
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
