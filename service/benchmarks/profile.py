"""``mmsearch bench serve --profile-requests N``: /search through the ASGI app, profiled.

No sockets and no server process: httpx's ASGI transport calls the app in this
process, under cProfile. cProfile sees the event loop's thread only, so the FAISS
search in the threadpool shows up as time waiting for it.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np

from service.benchmarks.serve import ServeBenchOptions, search_bodies
from service.benchmarks.workload import PrecomputedEncoder, build, workload

FINGERPRINT = "bench-in-process"


def run_profile(options: ServeBenchOptions, n: int) -> str:
    """The first size and factory: ms per /search (n calls unprofiled), then cProfile's
    top entries by own and by cumulative time over n more, as text."""
    size, factory = options.sizes[0], options.factories[0]
    data = workload(size, options.dim)
    bodies = search_bodies(data.queries, options.k, options.vector_encoding)
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        build(Path(tmp), data.vectors, data.labels, factory, FINGERPRINT)
        per_request_ms, stats = asyncio.run(_profile(Path(tmp), options.dim, bodies, n))
    head = f"{size:,} x {factory}: {per_request_ms:.3f} ms per /search in-process (cProfile off)"
    return f"{head}\n{stats}"


async def _profile(index_dir: Path, dim: int, bodies: list[bytes], n: int) -> tuple[float, str]:
    import httpx

    from service.app import create_app
    from service.settings import Settings

    encoder = PrecomputedEncoder(np.zeros((1, dim), np.float32), FINGERPRINT)
    settings = Settings(model="offline", index_dir=index_dir)  # type: ignore[call-arg]
    app = create_app(settings, encoder=encoder)
    transport = httpx.ASGITransport(app=app)
    headers = {"Content-Type": "application/json"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
    ):
        for body in bodies[:50]:  # warm-up
            await client.post("/search", content=body, headers=headers)
        started = time.perf_counter()
        for i in range(n):
            await client.post("/search", content=bodies[i % len(bodies)], headers=headers)
        per_request_ms = (time.perf_counter() - started) * 1000 / n
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(n):
            await client.post("/search", content=bodies[i % len(bodies)], headers=headers)
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    return per_request_ms, out.getvalue()
