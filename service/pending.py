"""Acknowledged item changes that no snapshot holds yet.

The admin routes add a change here *before* answering 202, and the apply job
(:mod:`service.apply_changes`) removes the changes it applied only once the
snapshot holding them is live. So a change is never lost between the two: a
worker that dies mid-apply leaves its changes here for the retried job, or for the
next one. Each change gets a sequence number; applying removes exactly the ones
it read, never a newer change to the same item that arrived meanwhile.

Two stores, as for jobs: a Redis hash (shared by every API process and worker;
as durable as the Redis server is configured to be: AOF or RDB) and an
in-memory dict for the embedded, in-process mode (lost with the process, like
that mode's queued jobs).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from index.changes import ItemChange
from service.events import REDIS_DOWN
from service.jobs import REDIS_CONNECT_TIMEOUT_S, REDIS_TIMEOUT_S, JobQueueUnavailableError
from service.settings import Settings


@dataclass(frozen=True)
class PendingChange:
    seq: int
    change: ItemChange


class PendingChanges(Protocol):
    def add(self, changes: Sequence[ItemChange]) -> None:
        """Record changes durably, in order; they are pending once this returns."""
        ...

    def pending(self) -> list[PendingChange]:
        """Every pending change, oldest first."""
        ...

    def remove(self, seqs: Sequence[int]) -> None: ...

    def close(self) -> None: ...


class MemoryPendingChanges:
    """In-process mode: changes in a dict, for the API's own job thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changes: dict[int, ItemChange] = {}
        self._next_seq = 1

    def add(self, changes: Sequence[ItemChange]) -> None:
        with self._lock:
            for change in changes:
                self._changes[self._next_seq] = change
                self._next_seq += 1

    def pending(self) -> list[PendingChange]:
        with self._lock:
            return [PendingChange(seq, change) for seq, change in sorted(self._changes.items())]

    def remove(self, seqs: Sequence[int]) -> None:
        with self._lock:
            for seq in seqs:
                self._changes.pop(seq, None)

    def close(self) -> None:
        pass


class RedisPendingChanges:
    """Changes in a Redis hash (sequence number -> change JSON) named after the queue."""

    def __init__(self, connection: redis.Redis, queue_name: str) -> None:
        self._redis = connection
        self._key = f"mmsearch:{queue_name}:item-changes"
        self._seq_key = f"{self._key}:seq"

    @contextmanager
    def _redis_needed(self) -> Iterator[None]:
        try:
            yield
        except REDIS_DOWN as exc:
            raise JobQueueUnavailableError(
                f"the item change store is unavailable: Redis is unreachable ({type(exc).__name__})"
            ) from exc

    def add(self, changes: Sequence[ItemChange]) -> None:
        if not changes:
            return
        with self._redis_needed():
            last = int(self._redis.incrby(self._seq_key, len(changes)))
            first = last - len(changes) + 1
            mapping: dict[Any, Any] = {
                str(first + i): change.to_json() for i, change in enumerate(changes)
            }
            self._redis.hset(self._key, mapping=mapping)

    def pending(self) -> list[PendingChange]:
        with self._redis_needed():
            saved = self._redis.hgetall(self._key)
        entries = [
            PendingChange(int(seq), ItemChange.from_json(text)) for seq, text in saved.items()
        ]
        return sorted(entries, key=lambda entry: entry.seq)

    def remove(self, seqs: Sequence[int]) -> None:
        if seqs:
            with self._redis_needed():
                self._redis.hdel(self._key, *map(str, seqs))

    def close(self) -> None:
        self._redis.close()


def create_pending_changes(settings: Settings) -> PendingChanges:
    """Redis when ``settings.redis_url`` is set (workers apply), else in memory."""
    if not settings.redis_url:
        return MemoryPendingChanges()
    connection = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
    )
    return RedisPendingChanges(connection, settings.queue_name)
