"""Dynamic batching of encoder calls across concurrent requests.

Each modality (text, image, recipe) has its own queue. One thread owns the encoder:
it takes the queue whose oldest request waited longest, fills a batch of up to
``max_batch`` inputs from the requests waiting there, encodes it once and hands
every request its own rows back. Requests keep their inputs' order.

Fairness: a batch takes one input from each waiting request in turn (round robin),
not a whole request at a time. A request of 64 long texts therefore delays a
one-text search by at most one batch, instead of by the whole 64 (issue 18's
"one request blocks all searches").

Isolation: if a batch fails, each request in it is encoded alone, so only the
request whose input breaks the encoder gets the error; its neighbours still get
their vectors (the peer bug where one bad image stalls the batch queue).

Batching is greedy by default (``max_wait_s`` 0): the thread takes whatever is
queued when it is free, so a lone request never waits, and requests that arrive
while a batch runs form the next one. A small wait (2-5 ms) gathers more per batch
on a GPU, where batch 1 leaves most of the device idle.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from models.encoders import Encoder

logger = logging.getLogger(__name__)

Kind = Literal["text", "image", "recipe"]
KINDS: tuple[Kind, ...] = ("text", "image", "recipe")


@dataclass(eq=False)
class _Pending:
    """One request's inputs of one kind, filled row by row as batches finish."""

    inputs: Sequence[Any]
    rows: np.ndarray
    future: Future[np.ndarray]
    arrived: float = field(default_factory=time.monotonic)
    taken: int = 0  # inputs handed to a batch so far
    done: int = 0  # rows filled so far

    @property
    def waiting(self) -> int:
        return len(self.inputs) - self.taken


@dataclass(frozen=True)
class _Slice:
    pending: _Pending
    position: int  # the input's index inside its request


class EncodeBatcher:
    """Shares encoder batches between requests; see the module docstring."""

    def __init__(
        self,
        encoder: Encoder,
        lock: threading.Lock,
        max_batch: int = 32,
        max_wait_s: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._encoder = encoder
        self._lock = lock  # also held by in-process re-index jobs and fusion
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queues: dict[Kind, deque[_Pending]] = {kind: deque() for kind in KINDS}
        self._wakeup = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="encode-batcher", daemon=True)
        self._thread.start()

    async def encode(self, kind: Kind, inputs: Sequence[Any]) -> np.ndarray:
        """One row per input, in order, encoded in batches shared with other requests."""
        return await asyncio.wrap_future(self.submit(kind, inputs))

    def submit(self, kind: Kind, inputs: Sequence[Any]) -> Future[np.ndarray]:
        future: Future[np.ndarray] = Future()
        if not inputs:
            future.set_result(np.empty((0, self._encoder.dim), dtype=np.float32))
            return future
        pending = _Pending(inputs, np.empty((len(inputs), self._encoder.dim), np.float32), future)
        with self._wakeup:
            if self._closed:
                raise RuntimeError("the encoder batcher is closed")
            self._queues[kind].append(pending)
            self._wakeup.notify()
        return future

    def close(self) -> None:
        """Stop the thread; requests still queued fail instead of hanging."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        self._thread.join(timeout=30)
        for queue in self._queues.values():
            for pending in queue:
                _fail(pending, RuntimeError("the server is shutting down"))
            queue.clear()

    def _run(self) -> None:
        while True:
            taken = self._next_batch()
            if taken is None:
                return
            kind, batch = taken
            self._encode_batch(kind, batch)

    def _next_batch(self) -> tuple[Kind, list[_Slice]] | None:
        with self._wakeup:
            while not self._closed and not self._has_waiting():
                self._wakeup.wait()
            if self._closed:
                return None
            kind = self._oldest_kind()
            self._gather(kind)
            return kind, self._take_round_robin(kind)

    def _has_waiting(self) -> bool:
        return any(self._queues[kind] for kind in KINDS)

    def _oldest_kind(self) -> Kind:
        """The kind whose first waiting request arrived earliest: no kind starves."""
        waiting = [kind for kind in KINDS if self._queues[kind]]
        return min(waiting, key=lambda kind: self._queues[kind][0].arrived)

    def _gather(self, kind: Kind) -> None:
        """Wait up to max_wait_s (lock released) for the batch to fill up."""
        deadline = time.monotonic() + self.max_wait_s
        while not self._closed and self._waiting_inputs(kind) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wakeup.wait(left)

    def _waiting_inputs(self, kind: Kind) -> int:
        return sum(pending.waiting for pending in self._queues[kind])

    def _take_round_robin(self, kind: Kind) -> list[_Slice]:
        """One input from each waiting request in turn, up to max_batch."""
        queue = self._queues[kind]
        for cancelled in [p for p in queue if p.future.cancelled()]:
            queue.remove(cancelled)  # a client that went away
        batch: list[_Slice] = []
        while len(batch) < self.max_batch and any(p.waiting for p in queue):
            for pending in queue:
                if pending.waiting and len(batch) < self.max_batch:
                    batch.append(_Slice(pending, pending.taken))
                    pending.taken += 1
        for finished in [p for p in queue if not p.waiting]:
            queue.remove(finished)  # fully handed out; the batch holds the rest
        return batch

    def _encode_batch(self, kind: Kind, batch: list[_Slice]) -> None:
        if not batch:
            return
        try:
            vectors = self._encode_inputs(kind, [s.pending.inputs[s.position] for s in batch])
        except Exception:
            logger.warning("an encoder batch failed; encoding its requests one by one")
            self._encode_each_request(kind, batch)
            return
        self._deliver(batch, vectors)

    def _encode_each_request(self, kind: Kind, batch: list[_Slice]) -> None:
        """After a failed batch: only the request whose inputs fail gets the error."""
        for pending in dict.fromkeys(s.pending for s in batch):
            own = [s for s in batch if s.pending is pending]
            try:
                vectors = self._encode_inputs(kind, [pending.inputs[s.position] for s in own])
            except Exception as exc:
                self._abandon(kind, pending, exc)
                continue
            self._deliver(own, vectors)

    def _encode_inputs(self, kind: Kind, inputs: list[Any]) -> np.ndarray:
        encode = self._encode_function(kind)
        with self._lock:
            return np.asarray(encode(inputs), dtype=np.float32)

    def _encode_function(self, kind: Kind) -> Callable[[list[Any]], np.ndarray]:
        match kind:
            case "text":
                return self._encoder.encode_texts
            case "image":
                return self._encoder.encode_images
            case "recipe":
                return self._encoder.encode_recipes

    def _deliver(self, batch: list[_Slice], vectors: np.ndarray) -> None:
        for piece, row in zip(batch, vectors, strict=True):
            pending = piece.pending
            pending.rows[piece.position] = row
            pending.done += 1
            if pending.done == len(pending.inputs) and not pending.future.done():
                pending.future.set_result(pending.rows)

    def _abandon(self, kind: Kind, pending: _Pending, exc: Exception) -> None:
        """Fail a request and drop its inputs that no batch has taken yet."""
        _fail(pending, exc)
        with self._wakeup:
            if pending in self._queues[kind]:
                self._queues[kind].remove(pending)


def _fail(pending: _Pending, exc: BaseException) -> None:
    if not pending.future.done():
        pending.future.set_exception(exc)
