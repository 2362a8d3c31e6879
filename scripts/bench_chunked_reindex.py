"""A chunked re-index on 1 and 2 ``mmsearch worker`` processes (issue #14, item 3).

Copies the first ``--items`` kfood recipes (photo, texts, recipe) to a temporary
folder, then for each configuration starts the workers (each with
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set to its torch thread count), waits
until they have loaded the model, enqueues one re-index split into ``--chunks``
chunk jobs through the real RQ queue and times it from enqueue to success. Each
run builds into a fresh index folder, so nothing is reused from a previous run.
Per run it also reports the chunk jobs' wall-clock span (the parallel part) and
the merge job's (the serial part: catalog, FAISS index, prototypes).

Configurations (``--runs``, default all three): ``1x2`` one worker with 2 torch
threads (the default on this 2-core machine), ``1x1`` one worker with 1 thread,
``2x1`` two workers with 1 thread each.

Needs Redis (``--redis-url``). Usage:
  python scripts/bench_chunked_reindex.py --model offline --items 120 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from rq import Queue, Worker
from rq.job import Job

from service.jobs import FINISHED_STATES, RQJobQueue
from service.reindex import ReindexRequest
from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kfood"
RUNS = {"1x2": (1, 2), "1x1": (1, 1), "2x1": (2, 1)}  # name: (workers, threads each)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="offline", help="encoder spec (MMSEARCH_MODEL)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="a kfood folder")
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--timeout-s", type=float, default=1800)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def copy_kfood(source: Path, dest: Path, n: int) -> Path:
    (dest / "images").mkdir(parents=True)
    lines = (source / "recipes.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    for line in lines:
        shutil.copy(source / json.loads(line)["image"], dest / json.loads(line)["image"])
    (dest / "recipes.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def worker_env(settings: Settings, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    env.update(
        MMSEARCH_MODEL=settings.model,
        MMSEARCH_DEVICE=settings.device,
        MMSEARCH_INDEX_DIR=str(settings.index_dir),
        MMSEARCH_REDIS_URL=settings.redis_url or "",
        MMSEARCH_QUEUE_NAME=settings.queue_name,
        PYTHONPATH=str(REPO),  # this checkout's code, whatever the venv installed
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
    )
    return env


def wait_for_workers(settings: Settings, n: int, timeout_s: float = 300) -> None:
    queue = Queue(settings.queue_name, connection=redis.Redis.from_url(settings.redis_url or ""))
    deadline = time.monotonic() + timeout_s
    while len(Worker.all(queue=queue)) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"{n} workers did not start in {timeout_s:.0f} s")
        time.sleep(0.5)


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's ended (waited-for) children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stop(workers: list[subprocess.Popen[bytes]], grace_s: float = 20) -> None:
    """SIGTERM (RQ's warm shutdown, which may wait out a blocking dequeue), then SIGKILL."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(grace_s)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(grace_s)


def span_s(jobs: list[Job]) -> float:
    started = min(job.started_at for job in jobs if job.started_at)
    ended = max(job.ended_at for job in jobs if job.ended_at)
    return (ended - started).total_seconds()


def one_run(name: str, source: Path, work: Path, args: argparse.Namespace) -> dict[str, object]:
    n_workers, threads = RUNS[name]
    load_before = os.getloadavg()[0]
    cpu_before = children_cpu_s()
    settings = Settings(
        model=args.model,
        device="cpu",
        index_dir=work / f"index-{name}",
        redis_url=args.redis_url,
        queue_name=f"bench-chunks-{uuid.uuid4().hex[:8]}",
    )
    command = [str(Path(sys.executable).parent / "mmsearch"), "worker"]
    env = worker_env(settings, threads)
    logs = [open(work / f"{name}-worker-{i}.log", "wb") for i in range(n_workers)]  # noqa: SIM115
    workers = [subprocess.Popen(command, env=env, stdout=log, stderr=log) for log in logs]
    try:
        wait_for_workers(settings, n_workers)
        queue = RQJobQueue(settings)
        started = time.perf_counter()
        job_id = queue.enqueue_reindex(ReindexRequest(source, "kfood", chunks=args.chunks))
        while (status := queue.status(job_id)) is None or status.state not in FINISHED_STATES:
            if time.perf_counter() - started > args.timeout_s:
                raise SystemExit(f"run {name}: no result in {args.timeout_s:.0f} s")
            time.sleep(0.2)
        seconds = time.perf_counter() - started
    finally:
        stop(workers)
        for log in logs:
            log.close()
    connection = redis.Redis.from_url(args.redis_url)
    merge = Job.fetch(job_id, connection=connection)
    chunks = [Job.fetch(i, connection=connection) for i in merge.meta["chunk_jobs"]]
    return {
        "run": name,
        "workers": n_workers,
        "torch_threads_per_worker": threads,
        "state": status.state.value,
        "seconds": round(seconds, 1),
        "chunks_span_s": round(span_s(chunks), 1),
        "merge_s": round(span_s([merge]), 1),
        "chunk_workers": sorted({job.worker_name or "" for job in chunks}),
        # What the workers used, model loading included: with the same CPU seconds and
        # no shorter wall time, the cores were busy with something else.
        "workers_cpu_s": round(children_cpu_s() - cpu_before, 1),
        "load_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-chunks-") as tmp:
        source = copy_kfood(args.data_dir, Path(tmp) / "kfood", args.items)
        for name in args.runs:
            results.append(one_run(name, source, Path(tmp), args))
            print(json.dumps(results[-1]), flush=True)
    summary = {
        "model": args.model,
        "items": args.items,
        "chunks": args.chunks,
        "cpus": os.cpu_count(),
        "runs": results,
    }
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0 if all(run["state"] == "succeeded" for run in results) else 1


if __name__ == "__main__":
    sys.exit(main())
