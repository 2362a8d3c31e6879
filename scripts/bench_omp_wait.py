"""OpenMP wait policy against encode latency and throughput, quiet and contended, one run.

    .venv/bin/python scripts/bench_omp_wait.py --model food-v1 --rounds 2

Each setting (OMP_WAIT_POLICY, GOMP_SPINCOUNT, torch threads) is read once, when the
OpenMP runtime loads, so every setting runs in a fresh subprocess, interleaved over
rounds so that load changes spread over all of them. Each child measures the median
single-photo encode (batch 1, what /search/image does per upload) and batch-16
photos/s. "contended" starts a busy single-threaded numpy loop beside the child (one
core of work, as a re-index worker beside the API would bring), stopped when the
child ends. torch and faiss both load libgomp here (see /proc/self/maps), whose
GOMP_SPINCOUNT overrides the policy's spin count (PASSIVE: 0; unset: 300,000; ACTIVE:
30 billion). Read the ratios to PASSIVE, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS: dict[str, dict[str, str]] = {
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "unset (runtime default)": {},
    "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "PASSIVE + GOMP_SPINCOUNT=1000": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"},
    "PASSIVE + GOMP_SPINCOUNT=10000": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"},
    "PASSIVE + GOMP_SPINCOUNT=100000": {
        "OMP_WAIT_POLICY": "PASSIVE",
        "GOMP_SPINCOUNT": "100000",
    },
    "PASSIVE, 1 thread": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"},
}
OMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")

BUSY_LOOP = """
import time, numpy as np
a = np.random.rand(200, 200)
end = time.monotonic() + float(__import__("sys").argv[1])
while time.monotonic() < end:
    a @ a
"""


def child(model: str, data: Path, singles: int) -> None:
    """Runs in the subprocess: load, warm up, measure, print one JSON line."""
    from PIL import Image

    from models.registry import load_encoder

    encoder = load_encoder(model, device="cpu")
    paths = sorted((data / "images").rglob("*.jpg"))[:32]
    images = [Image.open(p).convert("RGB") for p in paths]
    encoder.encode_images(images[:2])
    encoder.encode_images(images[:16])
    times = []
    for i in range(singles):
        started = time.perf_counter()
        encoder.encode_images([images[i % len(images)]])
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    for start in (0, 16, 0):
        encoder.encode_images(images[start : start + 16])
    seconds = time.perf_counter() - started
    import torch

    print(
        json.dumps(
            {
                "single_ms": 1000 * statistics.median(times),
                "batch16_photos_per_s": 48 / seconds,
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


def run_one(args: argparse.Namespace, setting: dict[str, str], contended: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARIABLES} | setting
    busy = None
    if contended:
        busy_env = env | {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, "300"], env=busy_env)
    try:
        command = [sys.executable, __file__, "--child", "--model", args.model]
        command += ["--data", str(args.data), "--singles", str(args.singles)]
        out = subprocess.run(command, env=env, capture_output=True, check=True, timeout=600)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def summarize(runs: dict[tuple[str, str], list[dict]]) -> list[dict]:
    rows = []
    for (condition, name), results in runs.items():
        single = statistics.median(r["single_ms"] for r in results)
        batch = statistics.median(r["batch16_photos_per_s"] for r in results)
        rows.append(
            {"condition": condition, "setting": name, "single_ms": round(single, 1)}
            | {
                "batch16_photos_per_s": round(batch, 1),
                "torch_threads": results[0]["torch_threads"],
            }
        )
    for row in rows:
        base = next(
            r for r in rows if r["condition"] == row["condition"] and r["setting"] == "PASSIVE"
        )
        row["single_vs_passive"] = round(row["single_ms"] / base["single_ms"], 2)
        row["batch16_vs_passive"] = round(
            row["batch16_photos_per_s"] / base["batch16_photos_per_s"], 2
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="food-v1")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/food101-10"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--singles", type=int, default=24, help="batch-1 encodes per child")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.model, args.data, args.singles)
        return
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.rounds):
        for condition in ("quiet", "contended"):
            for name, setting in SETTINGS.items():
                result = run_one(args, setting, condition == "contended")
                runs.setdefault((condition, name), []).append(result)
                print(condition, name, result, file=sys.stderr, flush=True)
    load = os.getloadavg()
    text = json.dumps({"loadavg_at_end": load, "rows": summarize(runs)}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
