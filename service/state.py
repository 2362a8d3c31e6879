"""What one running app holds (encoder, live snapshot, job queue, metrics) and the
lifespan that fills and empties it.

The encoder loads in the background: the server answers /healthz at once and
/readyz says "model loading" until it is done, instead of a long silent start that
orchestrators mistake for a hang. An injected encoder (tests, embedding callers)
skips that and the app is ready as soon as its lifespan has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import anyio.to_thread
from fastapi import FastAPI

from index.live import LiveSnapshot
from index.snapshot import Snapshot
from models.encoders import Encoder
from models.registry import load_encoder
from service.events import subscribe_snapshot_events
from service.jobs import JobQueue
from service.metrics import Metrics
from service.searching import FilterFieldCheck
from service.settings import Settings
from service.tasks import create_job_queue

logger = logging.getLogger(__name__)


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    # Encoders are not necessarily thread-safe: every encode_* call holds this lock.
    encoder_lock: threading.Lock = field(default_factory=threading.Lock)
    encoder: Encoder | None = None
    live: LiveSnapshot | None = None
    jobs: JobQueue | None = None
    startup_error: str | None = None  # why the encoder or index failed to load, for /readyz
    snapshot_events: Closeable | None = None
    loader: asyncio.Task[None] | None = None
    filter_check: FilterFieldCheck = field(default_factory=FilterFieldCheck)

    def __post_init__(self) -> None:
        self.metrics.watch_snapshot(self.current_snapshot)

    def index_error(self) -> str | None:
        """Why the latest CURRENT could not be loaded (fingerprint, corrupt files)."""
        return self.live.last_error if self.live is not None else None

    def current_snapshot(self) -> Snapshot | None:
        """The live snapshot now; callers keep this object for a whole request."""
        return self.live.current if self.live is not None else None


async def _load_encoder(settings: Settings) -> Encoder:
    started = time.perf_counter()
    load = partial(
        load_encoder, settings.model, device=settings.device, cache_dir=settings.cache_dir
    )
    encoder = await anyio.to_thread.run_sync(load, abandon_on_cancel=True)
    logger.info(
        "loaded encoder %r on %s (dim %d, fingerprint %s) in %.1f s",
        settings.model,
        encoder.device,
        encoder.dim,
        encoder.fingerprint,
        time.perf_counter() - started,
    )
    return encoder


def _refresh_on_event(live: LiveSnapshot) -> Callable[[str], None]:
    def on_version(version: str) -> None:
        logger.info("snapshot %s published; refreshing", version)
        live.refresh()

    return on_version


async def _open_index(state: AppState, encoder: Encoder) -> None:
    settings = state.settings
    # The constructor loads CURRENT (disk I/O, FAISS read): keep it off the loop. A
    # snapshot it cannot use is logged and left in ``live.last_error`` for /readyz.
    live = await anyio.to_thread.run_sync(LiveSnapshot, settings.index_dir, encoder.fingerprint)
    live.start_polling(settings.reload_interval_s)
    state.live = live
    if settings.redis_url:
        state.snapshot_events = subscribe_snapshot_events(
            settings.redis_url, _refresh_on_event(live)
        )


async def _start_model_and_index(state: AppState, injected: Encoder | None) -> None:
    encoder = injected if injected is not None else await _load_encoder(state.settings)
    state.encoder = encoder
    await _open_index(state, encoder)


async def _load_in_background(state: AppState) -> None:
    try:
        await _start_model_and_index(state, None)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the process stays up so /readyz can say why
        state.startup_error = f"{type(exc).__name__}: {exc}"
        logger.exception("model or index failed to load")


async def start(state: AppState, injected: Encoder | None) -> None:
    state.jobs = create_job_queue(state.settings)
    if injected is not None:
        await _start_model_and_index(state, injected)
    else:
        state.loader = asyncio.create_task(_load_in_background(state))


async def stop(state: AppState) -> None:
    if state.loader is not None:
        state.loader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await state.loader
    if state.snapshot_events is not None:
        state.snapshot_events.close()
    if state.live is not None:
        state.live.stop()
    if state.jobs is not None:
        state.jobs.close()


def make_lifespan(
    settings: Settings, encoder: Encoder | None
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state: AppState = app.state.mmsearch
        await start(state, encoder)
        try:
            yield
        finally:
            await stop(state)

    return lifespan
