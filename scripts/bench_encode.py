"""Encoder throughput: the service over real HTTP against the raw encoder, one run.

    .venv/bin/python scripts/bench_encode.py --model food-v1 --photos 48

Builds a small snapshot of food101 photos, starts ``mmsearch serve`` on it (a real
uvicorn), and measures side by side, as ratios:

- ``/embed`` photo throughput under 8 concurrent clients (1 photo per request, where
  only batching across requests can fill a batch; and 8 photos per request) against
  the raw encoder on batches of 8;
- ``/search/image`` p50 at concurrency 1 against a raw single-photo encode + FAISS
  search.

The machine is shared and noisy: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import os

# The raw encoder must run under the OpenMP wait policy the server gets (service/cli.py
# sets PASSIVE before torch loads): with the runtime's default spin-waiting here, a
# single raw encode took 24 ms against the server's 48 ms, and /search/image read 2x
# "slower" than raw for that reason alone. A user's value still wins, for both sides.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import base64
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from index.build import build_snapshot
from index.layout import read_current
from index.snapshot import Snapshot
from models.datasets import open_dataset
from models.registry import load_encoder


def photo_bytes(paths: list[Path]) -> list[bytes]:
    """Each photo as a 224-px JPEG: the upload a phone app would send."""
    out = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        image.thumbnail((256, 256))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def per_second(count: int, seconds: float) -> float:
    return round(count / seconds, 2)


def median_ms(call: Callable[[bytes], object], photos: list[bytes]) -> float:
    """Median wall time of ``call`` on each photo, in milliseconds."""
    times = []
    for photo in photos:
        started = time.perf_counter()
        call(photo)
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 1)


def raw_batched(encoder, photos: list[bytes], batch: int) -> float:
    """Photos/s of the encoder on decoded batches (decode included, as the server does)."""
    started = time.perf_counter()
    for start in range(0, len(photos), batch):
        encoder.encode_images([decode(p) for p in photos[start : start + batch]])
    return per_second(len(photos), time.perf_counter() - started)


def raw_single_search_ms(encoder, snapshot: Snapshot, photos: list[bytes]) -> float:
    def one(data: bytes) -> None:
        vector = encoder.encode_images([decode(data)])
        snapshot.index.search(vector, 10)

    return median_ms(one, photos)


def start_server(
    index_dir: Path, model: str, port: int, max_batch: int, max_wait_ms: float
) -> subprocess.Popen:
    env = {
        **os.environ,
        "MMSEARCH_MODEL": model,
        "MMSEARCH_INDEX_DIR": str(index_dir),
        "MMSEARCH_PORT": str(port),
        "MMSEARCH_MAX_BATCH": str(max_batch),
        "MMSEARCH_MAX_WAIT_MS": str(max_wait_ms),
        "MMSEARCH_LOG_LEVEL": "warning",
        # Lifts the per-request text cap so the fairness probe can send a long request.
        "MMSEARCH_MAX_REQUEST_TEXT_CHARS": "1000000",
    }
    command = [sys.executable, "-m", "service.cli", "serve"]
    server = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        time.sleep(0.5)
    server.kill()
    raise RuntimeError("the server did not become ready")


def http_embed(url: str, photos: list[bytes], per_request: int, clients: int) -> float:
    payloads = [
        {"inputs": [{"image": base64.b64encode(p).decode()} for p in photos[i : i + per_request]]}
        for i in range(0, len(photos), per_request)
    ]
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(clients) as pool:

        def post(payload: dict[str, Any]) -> httpx.Response:
            return client.post(f"{url}/embed", json=payload)

        post(payloads[0]).raise_for_status()  # warm-up
        started = time.perf_counter()
        for response in pool.map(post, payloads):
            response.raise_for_status()
        return per_second(len(photos), time.perf_counter() - started)


def http_search_image_ms(url: str, photos: list[bytes]) -> float:
    with httpx.Client(timeout=120) as client:

        def one(data: bytes) -> None:
            files = {"file": ("q.jpg", data, "image/jpeg")}
            client.post(f"{url}/search/image", files=files).raise_for_status()

        one(photos[0])
        return median_ms(one, photos)


LONG_TEXT = "김치찌개는 김치와 돼지고기, 두부를 넣고 끓인 찌개이다. " * 220  # ~8,000 characters


def http_search_during_long_embed(url: str) -> dict[str, float]:
    """A short text search's latency while another client embeds 64 long texts: the
    batcher takes one input per waiting request in turn, so the search waits for at
    most one batch, not for the whole long request."""

    def search(client: httpx.Client) -> float:
        started = time.perf_counter()
        client.post(
            f"{url}/search", json={"query": {"text": "spicy pork stew"}, "k": 5}
        ).raise_for_status()
        return time.perf_counter() - started

    with httpx.Client(timeout=600) as client, ThreadPoolExecutor(1) as pool:
        idle = statistics.median(search(client) for _ in range(5))
        payload = {"inputs": [{"text": LONG_TEXT}] * 64}
        started = time.perf_counter()
        long_request = pool.submit(client.post, f"{url}/embed", json=payload)
        time.sleep(0.5)
        during = statistics.median(search(client) for _ in range(5))
        long_request.result().raise_for_status()
        long_seconds = time.perf_counter() - started
    return {
        "search_idle_ms": round(1000 * idle, 1),
        "search_during_long_embed_ms": round(1000 * during, 1),
        "long_embed_s": round(long_seconds, 2),
    }


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    encoder = load_encoder(args.model, device="cpu")
    records = list(islice(open_dataset(args.data, "food101"), args.catalog))
    manifest = build_snapshot(records, encoder, workdir / "index")
    assert read_current(workdir / "index") == manifest.version
    snapshot = Snapshot.open(workdir / "index" / manifest.version)
    photos = photo_bytes([r.image_path for r in records[: args.photos] if r.image_path])
    runs: list[dict[str, float]] = []
    for round_number in range(args.rounds):
        for max_batch in args.max_batch:
            for max_wait_ms in args.max_wait_ms:
                batching = (max_batch, max_wait_ms)
                run = measure_server(args, workdir, encoder, snapshot, photos, batching)
                runs.append(
                    {"round": round_number, "max_batch": max_batch, "max_wait_ms": max_wait_ms}
                    | run
                )
    return {"model": args.model, "photos": len(photos), "runs": runs}


def measure_server(
    args: argparse.Namespace,
    workdir: Path,
    encoder,
    snapshot: Snapshot,
    photos: list[bytes],
    batching: tuple[int, float],
) -> dict[str, float]:
    """One server run, with the raw figures measured in the same window (just before
    and after each HTTP figure, while the server idles), so load changes cancel out."""
    server = start_server(workdir / "index", args.model, args.port, *batching)
    url = f"http://127.0.0.1:{args.port}"
    try:
        raw_before = raw_batched(encoder, photos, 8)
        one = http_embed(url, photos, per_request=1, clients=8)
        eight = http_embed(url, photos, per_request=8, clients=8)
        raw_after = raw_batched(encoder, photos, 8)
        raw_search = raw_single_search_ms(encoder, snapshot, photos[:16])
        search = http_search_image_ms(url, photos[:16])
        fairness = http_search_during_long_embed(url)
    finally:
        server.terminate()
        server.wait(30)
    raw_batch = (raw_before + raw_after) / 2
    return {
        "raw_batch8_photos_per_s": round(raw_batch, 2),
        "raw_single_encode_search_p50_ms": raw_search,
        "embed_c8_1photo_photos_per_s": one,
        "embed_c8_8photos_photos_per_s": eight,
        "search_image_c1_p50_ms": search,
        "embed_1photo_vs_raw": round(one / raw_batch, 2),
        "embed_8photos_vs_raw": round(eight / raw_batch, 2),
        "search_image_vs_raw": round(search / raw_search, 2),
        **fairness,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="food-v1")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/food101-10"))
    parser.add_argument("--catalog", type=int, default=200, help="photos in the index")
    parser.add_argument("--photos", type=int, default=48, help="query photos")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--max-batch", type=int, nargs="+", default=[32, 1], help="server MMSEARCH_MAX_BATCH runs"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        nargs="+",
        default=[0.0],
        help="server MMSEARCH_MAX_WAIT_MS runs (each with each --max-batch)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="repeat every server run")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
