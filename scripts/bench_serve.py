"""Search QPS over HTTP against raw FAISS in-process, side by side (issue #17, item 2).

Builds one snapshot per (size, factory) from clustered 384-d unit vectors (drawn
around cluster centres; each item labelled by its cluster, so class prototypes are
scored as in production), then measures, in one run and interleaved:

- ``raw``: ``faiss.read_index`` of that snapshot's index, ``index.search(q, k)``
  from C threads in this process;
- each ``--code LABEL=DIR``: ``mmsearch serve`` (real uvicorn) started as a subprocess
  with ``PYTHONPATH=DIR``, so two checkouts (before / after a change) are measured
  against the same snapshot in the same minutes. POST /search with a raw vector
  over keep-alive HTTP/1.1 connections, one per client thread.

Each cell runs ``--seconds`` after a short warm-up; QPS is requests / wall time,
latencies are per request (p50, p99). The machine is usually shared, so compare
ratios within one run, not figures across runs.

Usage:
  python scripts/bench_serve.py --code before=/path/to/old/checkout --code after=.
  python scripts/bench_serve.py --sizes 10000 --factories Flat --seconds 3
"""

from __future__ import annotations

import os

# As `mmsearch serve` does (service/cli.py): before faiss loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import http.client
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from index.autotune import exact_top_k, recall_at_k
from index.build import build_snapshot
from index.manifest import Manifest
from index.snapshot import INDEX_FILE
from index.vector_index import DEFAULT_EF_SEARCH
from models.encoders.base import l2_normalize
from models.types import CatalogRecord, Recipe

ROOT = Path(__file__).resolve().parents[1]
DIM = 384
N_CLUSTERS = 100
SPREAD = 0.35  # noise around a centre, relative to the centre's unit norm
N_QUERIES = 2000
RECALL_QUERIES = 500  # recall@10 against exact search is measured on this many queries
WARMUP_S = 1.0
START_TIMEOUT_S = 600.0


def clustered(
    n: int, centres: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(n, DIM) unit vectors drawn around unit centres, and each one's cluster."""
    labels = rng.integers(0, N_CLUSTERS, n)
    noise = rng.standard_normal((n, DIM)).astype(np.float32) * SPREAD / np.sqrt(DIM)
    return l2_normalize(centres[labels] + noise), labels


class PrecomputedEncoder:
    """Hands build_snapshot the benchmark's vectors: the text ``row:N:SIZE`` is row N.

    It carries the served model's fingerprint so that the server loads the snapshot.
    """

    def __init__(self, vectors: np.ndarray, fingerprint: str) -> None:
        self._vectors = vectors
        self.fingerprint = fingerprint
        self.dim = vectors.shape[1]
        self.device = "cpu"

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._vectors[[int(text.split(":")[1]) for text in texts]]

    def encode_images(self, images: Sequence[object]) -> np.ndarray:
        raise NotImplementedError("the benchmark catalog has no images")

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray:
        raise NotImplementedError("the benchmark catalog has no recipes")


def build(
    index_dir: Path, vectors: np.ndarray, labels: np.ndarray, factory: str, model: str
) -> str:
    n = len(vectors)
    records = (
        # The catalog's size is in the text: the same text under the same fingerprint
        # is reused from the live snapshot (index.reuse), but each size draws its own
        # vectors, so an unsalted "row:N" would keep the previous size's vector.
        CatalogRecord(id=f"item-{i}", texts=(f"row:{i}:{n}",), label=f"cluster-{label}")
        for i, label in enumerate(labels.tolist())
    )
    encoder = PrecomputedEncoder(vectors, model)
    manifest = build_snapshot(records, encoder, index_dir, factory=factory, batch_size=4096)  # type: ignore[arg-type]
    return manifest.version


# --------------------------------------------------------------------------- servers


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


def start_server(
    label: str, code: Path, index_dir: Path, port: int, model: str, workers: int
) -> Server:
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "MMSEARCH_MODEL": model,
        "MMSEARCH_DEVICE": "cpu",
        "MMSEARCH_INDEX_DIR": str(index_dir),
        "MMSEARCH_RELOAD_INTERVAL_S": "0.5",
        "MMSEARCH_LOG_LEVEL": "warning",
        "MMSEARCH_WORKERS": str(workers),
    }
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(command, cwd=code, env=env)
    return Server(label, port, process)


# --------------------------------------------------------------------------- load


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
            work(n % N_QUERIES)
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
            index.search(queries[n : n + 1], k)

        return work

    return make


def http_worker(port: int, bodies: list[bytes]) -> Callable[[], Callable[[int], None]]:
    headers = {"Content-Type": "application/json"}

    def make() -> Callable[[int], None]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def work(n: int) -> None:
            connection.request("POST", "/search", body=bodies[n], headers=headers)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(f"/search answered {response.status}: {payload[:200]!r}")

        return work

    return make


def raw_index(snapshot_dir: Path) -> faiss.Index:
    """The snapshot's FAISS index with the search parameters the service applies: the
    efSearch / nprobe tuned at build time (index.autotune), recorded in the manifest."""
    index = faiss.read_index(str(snapshot_dir / INDEX_FILE))
    manifest = Manifest.read(snapshot_dir)
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = manifest.ef_search or DEFAULT_EF_SEARCH
    with contextlib.suppress(RuntimeError):  # not an IVF index
        faiss.extract_index_ivf(index).nprobe = manifest.nprobe or 16
    return index


def service_rows(port: int, body: bytes) -> list[int]:
    """The catalog rows a /search answered with: item ``item-N`` is row N."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            "POST", "/search", body=body, headers={"Content-Type": "application/json"}
        )
        matches = json.loads(connection.getresponse().read())["matches"]
    finally:
        connection.close()
    return [int(match["id"].removeprefix("item-")) for match in matches]


def chroma_peer(
    args: argparse.Namespace, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray
) -> dict[str, object]:
    """scripts/peer_chroma.py in chromadb's own interpreter, on the same vectors."""
    with tempfile.TemporaryDirectory(prefix="bench-chroma-") as tmp:
        files = {name: Path(tmp) / f"{name}.npy" for name in ("vectors", "queries", "truth")}
        for name, array in zip(files, (vectors, queries, truth), strict=True):
            np.save(files[name], array)
        command = [str(args.chroma_python), str(ROOT / "scripts" / "peer_chroma.py")]
        command += [f"--{name}={path}" for name, path in files.items()]
        command += ["--ef-search", *map(str, args.chroma_ef), "--concurrency"]
        command += [str(c) for c in args.concurrency]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


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


# --------------------------------------------------------------------------- report


def table(rows: list[dict[str, object]], labels: list[str]) -> str:
    head = "| size | index | c | raw QPS | raw p50 / p99 ms |"
    head += "".join(f" {lab} QPS | {lab} p50 / p99 ms | {lab} / raw |" for lab in labels)
    lines = [head, "|" + "---|" * (4 + 3 * len(labels) + 1)]
    for row in rows:
        raw = row["raw"]
        assert isinstance(raw, Cell)
        line = f"| {row['size']:,} | {row['factory']} | {row['c']} | {raw.qps:,.0f} | "
        line += f"{raw.p50_ms:.2f} / {raw.p99_ms:.2f} |"
        for label in labels:
            cell = row[label]
            assert isinstance(cell, Cell)
            line += f" {cell.qps:,.0f} | {cell.p50_ms:.2f} / {cell.p99_ms:.2f} | "
            line += f"{cell.qps / raw.qps:.2f}× |"
        lines.append(line)
    return "\n".join(lines)


def parse_code(values: list[str]) -> list[tuple[str, Path]]:
    codes = []
    for value in values:
        label, sep, path = value.partition("=")
        if not sep or not label:
            raise SystemExit(f"--code takes LABEL=DIR, got {value!r}")
        codes.append((label, Path(path).resolve()))
    return codes


def measure_config(
    args: argparse.Namespace, servers: list[Server], index_dir: Path, size: int, factory: str
) -> list[dict[str, object]]:
    rng = np.random.default_rng(size)
    centres = l2_normalize(rng.standard_normal((N_CLUSTERS, DIM)).astype(np.float32))
    vectors, labels = clustered(size, centres, rng)
    queries, _ = clustered(N_QUERIES, centres, rng)  # new draws around the same centres
    model = str(servers[0].wait_until(lambda _s, body: body.get("model") is not None)["model"])
    started = time.perf_counter()
    version = build(index_dir, vectors, labels, factory, model)
    build_s = round(time.perf_counter() - started, 1)
    print(f"built {size:,} x {factory} in {build_s:.0f}s", file=sys.stderr)
    for server in servers:
        server.wait_until(lambda status, body: status == 200 and body["index_version"] == version)
    bodies = [json.dumps({"query": {"vector": q.tolist()}, "k": args.k}).encode() for q in queries]
    index = raw_index(index_dir / version)
    truth = exact_top_k(vectors, queries[:RECALL_QUERIES], 10)
    recalls = {"raw": round(recall_at_k(index.search(queries[:RECALL_QUERIES], 10)[1], truth), 4)}
    for server in servers:
        found = np.array([service_rows(server.port, body)[:10] for body in bodies[:RECALL_QUERIES]])
        recalls[server.label] = round(recall_at_k(found, truth), 4)
    rows: list[dict[str, object]] = []
    for c in args.concurrency:
        row: dict[str, object] = {"size": size, "factory": factory, "c": c, "build_s": build_s}
        row["recall_at_10"] = recalls
        row["raw"] = run_load(raw_worker(index, queries, args.k), c, args.seconds)
        for server in servers:
            with sampled(server, args.py_spy, f"{size}-{factory}-c{c}"):
                row[server.label] = run_load(http_worker(server.port, bodies), c, args.seconds)
        print(table([row], [s.label for s in servers]).splitlines()[-1], file=sys.stderr)
        rows.append(row)
    if args.chroma_python is not None and factory == args.factories[-1]:
        print(f"chromadb on {size:,} vectors", file=sys.stderr)
        rows[-1]["chroma"] = chroma_peer(args, vectors, queries[:RECALL_QUERIES], truth)
    return rows


def plot(rows: list[dict[str, object]], labels: list[str], out: Path) -> None:
    """QPS at concurrency 1 against recall@10, one panel per catalog size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({int(str(r["size"])) for r in rows})
    colours = {"raw": "tab:blue", **{lab: f"C{i + 1}" for i, lab in enumerate(labels)}}
    markers = {"Flat": "s", "HNSW32": "o"}
    figure, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2), squeeze=False)
    for axis, size in zip(axes[0], sizes, strict=True):
        lowest = 1.0
        for row in (r for r in rows if r["size"] == size and r["c"] == 1):
            recalls = row["recall_at_10"]
            assert isinstance(recalls, dict)
            for engine in ["raw", *labels]:
                cell = row[engine]
                assert isinstance(cell, Cell)
                name = "raw FAISS" if engine == "raw" else f"{engine} (HTTP)"
                factory = str(row["factory"])
                axis.scatter(
                    recalls[engine],
                    cell.qps,
                    color=colours[engine],
                    marker=markers.get(factory, "D"),
                    label=f"{name}, {factory}",
                )
                lowest = min(lowest, recalls[engine])
        for peer in (r["chroma"] for r in rows if r["size"] == size and "chroma" in r):
            assert isinstance(peer, dict)
            points = [(p["recall_at_10"], p["c1"]["qps"]) for p in peer["settings"]]
            axis.plot(*zip(*points, strict=True), "x--", color="grey", label="chromadb (HTTP)")
            lowest = min([lowest, *(recall for recall, _ in points)])
        axis.set(title=f"{size:,} vectors, concurrency 1", xlabel="recall@10", ylabel="QPS")
        axis.set_xlim(min(lowest, 0.9) - 0.01, 1.005)
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out, dpi=110)


# --------------------------------------------------------------------------- in-process profile


async def profile_in_process(index_dir: Path, bodies: list[bytes], n: int) -> tuple[float, str]:
    """Wall ms per /search through the ASGI app (no sockets), and cProfile's top entries.

    cProfile sees the event loop's thread only: the FAISS search in the threadpool
    shows up as time waiting for it.
    """
    import cProfile
    import io
    import pstats

    import httpx

    from service.app import create_app
    from service.settings import Settings

    encoder = PrecomputedEncoder(np.zeros((1, DIM), np.float32), "bench-in-process")
    app = create_app(Settings(model="offline", index_dir=index_dir), encoder=encoder)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    headers = {"Content-Type": "application/json"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
    ):
        for body in bodies[:50]:  # warm-up
            await client.post("/search", content=body, headers=headers)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for i in range(n):
            await client.post("/search", content=bodies[i % len(bodies)], headers=headers)
        profiler.disable()
        per_request_ms = (time.perf_counter() - started) * 1000 / n
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return per_request_ms, out.getvalue()


def run_profile(args: argparse.Namespace) -> None:
    import asyncio

    size, factory = args.sizes[0], args.factories[0]
    rng = np.random.default_rng(size)
    centres = l2_normalize(rng.standard_normal((N_CLUSTERS, DIM)).astype(np.float32))
    vectors, labels = clustered(size, centres, rng)
    queries, _ = clustered(N_QUERIES, centres, rng)
    bodies = [json.dumps({"query": {"vector": q.tolist()}, "k": args.k}).encode() for q in queries]
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        build(Path(tmp), vectors, labels, factory, "bench-in-process")
        per_request_ms, stats = asyncio.run(
            profile_in_process(Path(tmp), bodies, args.profile_requests)
        )
    print(f"{size:,} x {factory}: {per_request_ms:.3f} ms per /search in-process (cProfile on)")
    print(stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--factories", nargs="+", default=["Flat", "HNSW32"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--model", default="offline", help="MMSEARCH_MODEL of the servers")
    parser.add_argument("--workers", type=int, default=1, help="MMSEARCH_WORKERS of the servers")
    parser.add_argument(
        "--code", action="append", default=[], help="LABEL=DIR, repeatable [service=.]"
    )
    parser.add_argument("--base-port", type=int, default=18_700)
    parser.add_argument("--json", type=Path, help="Also write the figures here")
    parser.add_argument(
        "--py-spy", type=Path, help="Record each server's stacks (py-spy on PATH) into this folder"
    )
    parser.add_argument(
        "--chroma-python",
        type=Path,
        help="Also run chromadb's server as the peer: the python of a venv with chromadb",
    )
    parser.add_argument("--chroma-ef", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--plot", type=Path, help="Write QPS against recall here (PNG)")
    parser.add_argument(
        "--profile-requests",
        type=int,
        help="Instead: profile this many /search calls through the app in this process "
        "(first size and factory; this process's code, PYTHONPATH decides which)",
    )
    args = parser.parse_args()
    if args.profile_requests:
        run_profile(args)
        return
    codes = parse_code(args.code) or [("service", ROOT)]

    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        index_dir = Path(tmp)
        servers = [
            start_server(label, code, index_dir, args.base_port + i, args.model, args.workers)
            for i, (label, code) in enumerate(codes)
        ]
        try:
            for size in args.sizes:
                for factory in args.factories:
                    rows += measure_config(args, servers, index_dir, size, factory)
        finally:
            for server in servers:
                server.process.terminate()
                server.process.wait(timeout=60)
    labels = [label for label, _ in codes]
    print(table(rows, labels))
    for row in rows:
        if "chroma" in row:
            print(f"chromadb at {row['size']:,}: {json.dumps(row['chroma'])}")
    if args.json is not None:
        plain = [
            {k: (v.__dict__ if isinstance(v, Cell) else v) for k, v in r.items()} for r in rows
        ]
        args.json.write_text(json.dumps(plain, indent=2), encoding="utf-8")
    if args.plot is not None:
        plot(rows, labels, args.plot)


if __name__ == "__main__":
    main()
