"""Update-to-visible latency of PUT / DELETE /admin/items at 10k items (issue #14, item 2).

Builds a catalog of ``--items`` items whose vectors are clustered 384-d unit vectors
handed to the builder by service/benchmarks/workload.py's PrecomputedEncoder, stamped with
the served model's fingerprint so that the server loads it. Then starts the real
processes: ``mmsearch serve`` alone (jobs in its thread), and with ``--redis-url``
also ``mmsearch serve`` + one ``mmsearch worker`` on Redis. Each of ``--updates``
rounds PUTs a new item with a text of its own (encoded by the real model) and
polls POST /search every ``--poll-ms`` until that text's top match is the new
item; then DELETEs it and polls until GET /items/{id} is 404. The latency is from
sending the request to the first answer that shows the change. A final burst
PUTs ``--burst`` items back to back and reports the time until all are served and
how many snapshots they took (coalescing).

Usage:
  PYTHONPATH=. python scripts/bench_item_updates.py --items 10000 --updates 10 \\
      --redis-url redis://127.0.0.1:6379/14 --json var/bench/item-updates.json
"""

from __future__ import annotations

import os

# As `mmsearch serve` does (service/cli.py): before faiss loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from rq import Queue, Worker

from index.build import build_snapshot
from models.encoders.base import l2_normalize
from models.registry import load_encoder
from models.types import CatalogRecord
from service.benchmarks.workload import PrecomputedEncoder

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-item-updates"
N_CLUSTERS = 100
START_TIMEOUT_S = 600.0
VISIBLE_TIMEOUT_S = 120.0


def build_catalog(index_dir: Path, n: int, fingerprint: str, dim: int) -> None:
    rng = np.random.default_rng(0)
    centres = l2_normalize(rng.standard_normal((N_CLUSTERS, dim)).astype(np.float32))
    labels = rng.integers(0, N_CLUSTERS, n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * 0.35 / np.sqrt(dim)
    vectors = l2_normalize(centres[labels] + noise)
    records = (
        CatalogRecord(id=f"item-{i}", texts=(f"row:{i}:{n}",), label=f"cluster-{label}")
        for i, label in enumerate(labels.tolist())
    )
    encoder = PrecomputedEncoder(vectors, fingerprint)
    build_snapshot(records, encoder, index_dir, batch_size=4096)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def processes(index_dir: Path, model: str, redis_url: str | None) -> Iterator[str]:
    """``mmsearch serve`` (and a worker with Redis); yields the API's base URL."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MMSEARCH_MODEL": model,
        "MMSEARCH_DEVICE": "cpu",
        "MMSEARCH_INDEX_DIR": str(index_dir),
        "MMSEARCH_ADMIN_TOKEN": TOKEN,
        "MMSEARCH_LOG_LEVEL": "warning",
        "MMSEARCH_KEEP_SNAPSHOTS": "1",
    }
    if redis_url:
        env |= {
            "MMSEARCH_REDIS_URL": redis_url,
            "MMSEARCH_QUEUE_NAME": f"bench-{uuid.uuid4().hex[:8]}",
        }
    cli = [sys.executable, "-m", "service.cli"]
    started = [subprocess.Popen([*cli, "serve", "--port", str(port)], cwd=ROOT, env=env)]
    if redis_url:
        started.append(subprocess.Popen([*cli, "worker"], cwd=ROOT, env=env))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, started)
        if redis_url:  # the worker loads the model too: not part of the latency
            wait_for_worker(redis_url, env["MMSEARCH_QUEUE_NAME"], started)
        yield base
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:  # an idle RQ worker may sit in its dequeue
                process.kill()
                process.wait(30)


def wait_ready(base: str, started: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in started):
            raise RuntimeError("a benchmark process exited early")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError("the API was not ready in time")


def wait_for_worker(
    redis_url: str, queue_name: str, started: list[subprocess.Popen[bytes]]
) -> None:
    queue = Queue(queue_name, connection=redis.Redis.from_url(redis_url))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not Worker.all(queue=queue):
        if time.monotonic() > deadline or any(p.poll() is not None for p in started):
            raise RuntimeError("the worker did not start")
        time.sleep(0.5)


def until(check: Callable[[], bool], poll_s: float) -> float:
    """Seconds until ``check()`` holds (polled every ``poll_s``)."""
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > VISIBLE_TIMEOUT_S:
            raise RuntimeError("the change did not become visible in time")
        time.sleep(poll_s)
    return time.perf_counter() - started


def top_id(client: httpx.Client, text: str) -> str | None:
    body = {"query": {"text": text}, "k": 1, "kinds": ["text"]}
    matches = client.post("/search", json=body).json()["matches"]
    return matches[0]["id"] if matches else None


def one_round(client: httpx.Client, i: int, poll_s: float) -> tuple[float, float]:
    """Seconds from sending a PUT until search serves it, then a DELETE until 404."""
    item_id, text = f"new-{i}", f"freshly added dish number {i}: {uuid.uuid4().hex}"
    started = time.perf_counter()
    client.put(f"/admin/items/{item_id}", json={"texts": [text], "label": "new"}).raise_for_status()
    until(lambda: top_id(client, text) == item_id, poll_s)
    put_s = time.perf_counter() - started
    started = time.perf_counter()
    client.delete(f"/admin/items/{item_id}").raise_for_status()
    until(lambda: client.get(f"/items/{item_id}").status_code == 404, poll_s)
    return put_s, time.perf_counter() - started


def burst(client: httpx.Client, n: int, poll_s: float) -> dict[str, Any]:
    """``n`` PUTs back to back: seconds until all are served, and how many snapshots
    their jobs published (each job reports the snapshot that first held its changes)."""
    texts = {f"burst-{i}": f"burst dish {i}: {uuid.uuid4().hex}" for i in range(n)}
    started = time.perf_counter()
    job_urls = []
    for item_id, text in texts.items():
        response = client.put(f"/admin/items/{item_id}", json={"texts": [text]})
        response.raise_for_status()
        job_urls.append(response.headers["Location"])
    last_id, last_text = list(texts.items())[-1]
    until(lambda: top_id(client, last_text) == last_id, poll_s)
    elapsed = time.perf_counter() - started
    served = sum(top_id(client, text) == item_id for item_id, text in texts.items())
    versions = set()
    for url in job_urls:
        until(lambda url=url: client.get(url).json()["state"] == "succeeded", poll_s)
        versions.add(client.get(url).json()["index_version"])
    return {
        "changes": n,
        "all_visible_s": round(elapsed, 3),
        "served": served,
        "snapshots": len(versions),
    }


def measure(
    index_dir: Path, model: str, redis_url: str | None, args: argparse.Namespace
) -> dict[str, Any]:
    poll_s = args.poll_ms / 1000
    with processes(index_dir, model, redis_url) as base:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            rounds = [one_round(client, i, poll_s) for i in range(args.updates)]
            coalesced = burst(client, args.burst, poll_s)
    put_s, delete_s = (np.array(column) for column in zip(*rounds, strict=True))
    return {
        "mode": "redis+worker" if redis_url else "in-process",
        "put_visible_s": summary(put_s),
        "delete_visible_s": summary(delete_s),
        "burst": coalesced,
    }


def summary(values: np.ndarray) -> dict[str, float]:
    return {
        "p50": round(float(np.percentile(values, 50)), 3),
        "max": round(float(values.max()), 3),
        "min": round(float(values.min()), 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--poll-ms", type=float, default=20.0)
    parser.add_argument("--model", default="food-v1")
    parser.add_argument("--redis-url", default=None, help="also measure with a worker on Redis")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    encoder = load_encoder(args.model, device="cpu")
    results = {"items": args.items, "model": args.model, "load_before": os.getloadavg(), "runs": []}
    for redis_url in (None, args.redis_url) if args.redis_url else (None,):
        with tempfile.TemporaryDirectory(prefix="bench-items-") as tmp:
            index_dir = Path(tmp) / "index"
            build_catalog(index_dir, args.items, encoder.fingerprint, encoder.dim)
            run = measure(index_dir, args.model, redis_url, args)
        print(json.dumps(run), flush=True)  # noqa: T201
        results["runs"].append(run)  # type: ignore[attr-defined]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
