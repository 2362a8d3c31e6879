"""What one running app holds (encoder, live snapshot, job queue, metrics) and the
lifespan that fills and empties it.

The encoder loads in the background: the server answers /healthz at once and
/readyz says "model loading" until it is done, instead of a long silent start that
orchestrators mistake for a hang. An injected encoder (tests, embedding callers)
skips that and the app is ready as soon as its lifespan has started.

In-process re-index jobs (no Redis) use this app's encoder, under the same lock
as requests, so the model is in memory once; and a job succeeds only once this
app serves the snapshot it built (:func:`reindex_in_process`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import anyio.to_thread
import numpy as np
from fastapi import FastAPI
from PIL import Image

from index.layout import clean_stale_staging, read_current
from index.live import LiveSnapshot
from index.snapshot import Snapshot
from models.encoders import Encoder
from models.lexicon import Lexicon, load_lexicon
from models.registry import load_encoder
from models.types import Recipe
from service.apply_changes import apply_pending
from service.batching import EncodeBatcher
from service.errors import ModelNotReadyError
from service.events import subscribe_snapshot_events
from service.jobs import (
    ChangesApplier,
    JobOutcome,
    JobQueue,
    JobQueueUnavailableError,
    ProgressCallback,
    Reindexer,
    create_job_queue,
)
from service.metrics import Metrics
from service.pending import PendingChanges, create_pending_changes, remove_unused_uploads
from service.reindex import ReindexRequest, reindex
from service.search_placement import SearchPlacement
from service.searching import FilterFieldCheck
from service.settings import Settings

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
    batcher: EncodeBatcher | None = None  # set with the encoder; requests encode through it
    live: LiveSnapshot | None = None
    jobs: JobQueue | None = None
    pending: PendingChanges | None = None  # item changes acknowledged, not yet applied
    startup_error: str | None = None  # why the encoder or index failed to load, for /readyz
    snapshot_events: Closeable | None = None
    loader: asyncio.Task[None] | None = None
    filter_check: FilterFieldCheck = field(default_factory=FilterFieldCheck)
    placement: SearchPlacement = field(init=False)
    lexicon: Lexicon | None = None

    def __post_init__(self) -> None:
        self.placement = SearchPlacement(self.settings.inline_search_ms)
        self.metrics.watch_snapshot(self.current_snapshot)
        name = self.settings.query_lexicon
        self.lexicon = None if name == "none" else load_lexicon(name)

    def index_error(self) -> str | None:
        """Why the latest CURRENT could not be loaded (fingerprint, corrupt files)."""
        return self.live.last_error if self.live is not None else None

    def current_snapshot(self) -> Snapshot | None:
        """The live snapshot now; callers keep this object for a whole request."""
        return self.live.current if self.live is not None else None


class LockedEncoder:
    """An encoder whose encode_* calls hold a lock: the one requests hold too."""

    def __init__(self, encoder: Encoder, lock: threading.Lock) -> None:
        self._encoder = encoder
        self._lock = lock
        sets = getattr(encoder, "sets", None)  # a bundle's set heads: jobs write set rows
        self.sets = None if sets is None else LockedSets(sets, lock)

    @property
    def dim(self) -> int:
        return self._encoder.dim

    @property
    def fingerprint(self) -> str:
        return self._encoder.fingerprint

    @property
    def device(self) -> str:
        return self._encoder.device

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        with self._lock:
            return self._encoder.encode_images(images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self._encoder.encode_texts(texts)

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray:
        with self._lock:
            return self._encoder.encode_recipes(recipes)


class LockedSets:
    """A set encoder (:class:`models.set_encoding.SetEncoder`) whose encodes hold a lock."""

    def __init__(self, sets: Any, lock: threading.Lock) -> None:
        self._sets = sets
        self._lock = lock
        self.slots = sets.slots

    @property
    def digest(self) -> str:
        return str(self._sets.digest)

    def has(self, modality: str) -> bool:
        return bool(self._sets.has(modality))

    def image_sets(self, images: Sequence[Image.Image]) -> np.ndarray:
        with self._lock:
            return np.asarray(self._sets.image_sets(images))

    def text_sets(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return np.asarray(self._sets.text_sets(texts))

    def recipe_sets(self, recipes: Sequence[Recipe]) -> np.ndarray:
        with self._lock:
            return np.asarray(self._sets.recipe_sets(recipes))


class SnapshotNotServedError(RuntimeError):
    """A snapshot was published but this process does not serve it."""


def reindex_in_process(state: AppState) -> Reindexer:
    """The thread job backend's reindexer: this app's model, done once it serves the result."""

    def run(request: ReindexRequest, progress: ProgressCallback) -> JobOutcome:
        encoder, live = state.encoder, state.live
        if encoder is None or live is None:
            raise ModelNotReadyError(
                f"the model {state.settings.model!r} is not loaded yet; retry shortly"
            )
        manifest = reindex(
            request, state.settings, LockedEncoder(encoder, state.encoder_lock), progress
        )
        remove_unused_uploads(state.settings, state.pending)
        version = manifest.version
        live.refresh()
        if live.version != version:
            raise SnapshotNotServedError(_not_served_reason(state, live, version))
        return JobOutcome.of(manifest)

    return run


def apply_changes_in_process(state: AppState) -> ChangesApplier:
    """The thread job backend's item change applier: like :func:`reindex_in_process`."""

    def run() -> JobOutcome:
        encoder, live, pending = state.encoder, state.live, state.pending
        if encoder is None or live is None or pending is None:
            raise ModelNotReadyError(
                f"the model {state.settings.model!r} is not loaded yet; retry shortly"
            )
        outcome = apply_pending(state.settings, LockedEncoder(encoder, state.encoder_lock), pending)
        live.refresh()
        if live.version != outcome.index_version:
            raise SnapshotNotServedError(_not_served_reason(state, live, outcome.index_version))
        return outcome

    return run


def _not_served_reason(state: AppState, live: LiveSnapshot, version: str) -> str:
    if read_current(state.settings.index_dir) != version:
        return f"snapshot {version} was published, then replaced by a newer one before it served"
    return f"snapshot {version} was published but cannot be served: {live.last_error}"


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
    live = await anyio.to_thread.run_sync(
        partial(
            LiveSnapshot,
            settings.index_dir,
            encoder.fingerprint,
            backend=settings.vector_backend(),
        )
    )
    live.start_polling(settings.reload_interval_s)
    state.live = live
    if settings.redis_url:
        state.snapshot_events = subscribe_snapshot_events(
            settings.redis_url, _refresh_on_event(live)
        )


async def _start_model_and_index(state: AppState, injected: Encoder | None) -> None:
    encoder = injected if injected is not None else await _load_encoder(state.settings)
    settings = state.settings
    state.batcher = EncodeBatcher(
        encoder, state.encoder_lock, settings.max_batch, settings.max_wait_ms / 1000
    )
    state.encoder = encoder
    await _open_index(state, encoder)
    await _queue_pending_changes(state)


async def _queue_pending_changes(state: AppState) -> None:
    """Changes accepted before a restart, or left by a job that ran out of retries,
    get a job now rather than waiting for the next change request."""
    pending, jobs = state.pending, state.jobs
    if pending is None or jobs is None:
        return
    try:
        waiting = await anyio.to_thread.run_sync(pending.pending)
        if waiting:
            job_id = await anyio.to_thread.run_sync(jobs.enqueue_item_changes)
            logger.info("%d item change(s) were pending: job %s applies them", len(waiting), job_id)
    except JobQueueUnavailableError as exc:  # the next change request queues one
        logger.warning("pending item changes not queued at start: %s", exc)


async def _load_in_background(state: AppState) -> None:
    try:
        await _start_model_and_index(state, None)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the process stays up so /readyz can say why
        state.startup_error = f"{type(exc).__name__}: {exc}"
        logger.exception("model or index failed to load")


async def start(state: AppState, injected: Encoder | None) -> None:
    # A build that died with the last run left its staging directory: unlocked, so gone now.
    await anyio.to_thread.run_sync(clean_stale_staging, state.settings.index_dir)
    state.pending = create_pending_changes(state.settings)
    state.jobs = create_job_queue(
        state.settings, reindex_in_process(state), apply_changes_in_process(state)
    )
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
    if state.pending is not None:
        state.pending.close()
    if state.batcher is not None:
        await anyio.to_thread.run_sync(state.batcher.close)


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
