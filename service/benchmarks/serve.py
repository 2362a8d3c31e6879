"""Search QPS over HTTP against raw FAISS in-process, side by side (issue #17).

Builds one snapshot per (size, factory) from clustered unit vectors
(:mod:`service.benchmarks.workload`), then measures, in one run and interleaved:

- ``raw``: ``faiss.read_index`` of that snapshot's index with the search parameters
  the build tuned, ``index.search(q, k)`` from C threads in this process;
- each ``--code LABEL=DIR``: ``mmsearch serve`` (real uvicorn) started as a subprocess
  with ``PYTHONPATH=DIR``, so two checkouts (before / after a change) are measured
  against the same snapshot in the same minutes: ``POST /search`` with a raw vector;
  and, as the ceiling of any endpoint in that stack, ``GET /healthz``;
- with ``chroma_python``: chromadb's own HTTP server on the same vectors (the peer).

recall@10 is measured against exact search for raw FAISS and for each server.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index.autotune import exact_top_k, recall_at_k
from index.manifest import Manifest
from index.snapshot import INDEX_FILE
from index.vector_index import DEFAULT_EF_SEARCH
from service.benchmarks.load import (
    Code,
    Server,
    ServerSpec,
    http_worker,
    post_json,
    raw_worker,
    run_load,
    sampled,
    start_server,
)
from service.benchmarks.report import Row
from service.benchmarks.workload import Workload, build, workload

RECALL_QUERIES = 500  # recall@10 against exact search is measured on this many queries
PEER_SCRIPT = Path(__file__).with_name("peer_chroma.py")


@dataclass(frozen=True)
class ServeBenchOptions:
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000])
    factories: list[str] = field(default_factory=lambda: ["Flat", "HNSW32"])
    concurrency: list[int] = field(default_factory=lambda: [1, 8])
    seconds: float = 5.0
    k: int = 10
    dim: int = 384
    codes: list[Code] = field(default_factory=list)  # [] = this checkout, vector_encoding
    server: ServerSpec = ServerSpec(model="offline", workers=1, module="service.cli")
    base_port: int = 18_700
    vector_encoding: str = "json"  # for the profile and the default server
    ceiling: bool = True  # also measure GET /healthz on each server
    py_spy: Path | None = None
    chroma_python: Path | None = None
    chroma_ef: list[int] = field(default_factory=lambda: [16, 32, 64, 128])


def this_checkout() -> Path:
    """The folder that holds this code's ``service`` package."""
    return Path(__file__).resolve().parents[2]


def run_serve_bench(options: ServeBenchOptions, log: Callable[[str], None]) -> list[Row]:
    """Every (size, factory, concurrency) row; servers started and stopped here."""
    codes = options.codes or [Code("service", this_checkout(), options.vector_encoding)]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        index_dir = Path(tmp)
        servers = [
            start_server(code, index_dir, options.base_port + i, options.server)
            for i, code in enumerate(codes)
        ]
        encodings = {code.label: code.vector_encoding for code in codes}
        try:
            for size in options.sizes:
                for factory in options.factories:
                    config = (size, factory)
                    rows += measure_config(options, servers, encodings, index_dir, config, log)
        finally:
            for server in servers:
                server.stop()
    return rows


def search_bodies(queries: np.ndarray, k: int, encoding: str) -> list[bytes]:
    """One ``POST /search`` body per query: the vector as a JSON list or as base64."""
    import base64

    if encoding == "base64":
        return [
            json.dumps(
                {
                    "query": {"vector_b64": base64.b64encode(q.astype("<f4").tobytes()).decode()},
                    "k": k,
                }
            ).encode()
            for q in queries
        ]
    return [json.dumps({"query": {"vector": q.tolist()}, "k": k}).encode() for q in queries]


def measure_config(
    options: ServeBenchOptions,
    servers: list[Server],
    encodings: dict[str, str],
    index_dir: Path,
    config: tuple[int, str],
    log: Callable[[str], None],
) -> list[Row]:
    size, factory = config
    data = workload(size, options.dim)
    model = str(servers[0].wait_until(lambda _s, body: body.get("model") is not None)["model"])
    started = time.perf_counter()
    version = build(index_dir, data.vectors, data.labels, factory, model)
    build_s = round(time.perf_counter() - started, 1)
    log(f"built {size:,} x {factory} in {build_s:.1f}s")
    for server in servers:
        server.wait_until(lambda status, body: status == 200 and body["index_version"] == version)
    bodies = {
        label: search_bodies(data.queries, options.k, encoding)
        for label, encoding in encodings.items()
    }
    index = raw_index(index_dir / version)
    recalls = measure_recalls(index, data, servers, bodies)
    rows: list[Row] = []
    for c in options.concurrency:
        row: Row = {"size": size, "factory": factory, "c": c, "build_s": build_s}
        row["recall_at_10"] = recalls
        row["raw"] = run_load(raw_worker(index, data.queries, options.k), c, options.seconds)
        for server in servers:
            with sampled(server, options.py_spy, f"{size}-{factory}-c{c}"):
                worker = http_worker(server.port, "/search", bodies[server.label])
                row[server.label] = run_load(worker, c, options.seconds)
        if options.ceiling:
            row["ceiling"] = {
                s.label: run_load(http_worker(s.port, "/healthz"), c, options.seconds)
                for s in servers
            }
        rows.append(row)
        log(f"{size:,} x {factory} c{c} done")
    if options.chroma_python is not None and factory == options.factories[-1]:
        log(f"chromadb on {size:,} vectors")
        truth = exact_top_k(data.vectors, data.queries[:RECALL_QUERIES], 10)
        rows[-1]["chroma"] = chroma_peer(options, data, truth)
    return rows


def measure_recalls(
    index: faiss.Index, data: Workload, servers: list[Server], bodies: dict[str, list[bytes]]
) -> dict[str, float]:
    """recall@10 against exact search: raw FAISS, and each server's /search answers."""
    queries = data.queries[:RECALL_QUERIES]
    truth = exact_top_k(data.vectors, queries, 10)
    recalls = {"raw": round(recall_at_k(index.search(queries, 10)[1], truth), 4)}
    for server in servers:
        sent = bodies[server.label][:RECALL_QUERIES]
        found = np.array([service_rows(server, body)[:10] for body in sent])
        recalls[server.label] = round(recall_at_k(found, truth), 4)
    return recalls


def service_rows(server: Server, body: bytes) -> list[int]:
    """The catalog rows a /search answered with: item ``item-N`` is row N."""
    matches: list[dict[str, Any]] = post_json(server.port, "/search", body)["matches"]  # type: ignore[assignment]
    return [int(str(match["id"]).removeprefix("item-")) for match in matches]


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


def chroma_peer(options: ServeBenchOptions, data: Workload, truth: np.ndarray) -> dict[str, Any]:
    """peer_chroma.py in chromadb's own interpreter, on the same vectors."""
    queries = data.queries[:RECALL_QUERIES]
    with tempfile.TemporaryDirectory(prefix="bench-chroma-") as tmp:
        files = {name: Path(tmp) / f"{name}.npy" for name in ("vectors", "queries", "truth")}
        for name, array in zip(files, (data.vectors, queries, truth), strict=True):
            np.save(files[name], array)
        command = [str(options.chroma_python), str(PEER_SCRIPT)]
        command += [f"--{name}={path}" for name, path in files.items()]
        command += ["--ef-search", *map(str, options.chroma_ef), "--concurrency"]
        command += [str(c) for c in options.concurrency]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def log_to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
