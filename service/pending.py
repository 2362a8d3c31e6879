"""Acknowledged item changes that no snapshot holds yet.

The admin routes add a change here *before* answering 202, and the apply job
(:mod:`service.apply_changes`) removes the changes it applied only once the
snapshot holding them is live. So a change is never lost between the two: a
worker that dies mid-apply leaves its changes here for the retried job, or for the
next one. Each change gets a sequence number; applying removes exactly the ones
it read, never a newer change to the same item that arrived meanwhile.

Two stores: a Redis hash (shared by every API process and worker; as durable as
the Redis server is configured to be: AOF or RDB) and, for the embedded in-process
mode, a small SQLite file in the index folder (:data:`PENDING_FILE`), committed
with a full sync before the 202, so an accepted change survives an API restart:
the restarted API queues a job for what it finds pending (:mod:`service.state`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis

from index.changes import ItemChange
from service.events import REDIS_DOWN
from service.jobs import REDIS_CONNECT_TIMEOUT_S, REDIS_TIMEOUT_S, JobQueueUnavailableError
from service.settings import Settings
from service.uploads import remove_orphan_uploads

logger = logging.getLogger(__name__)

PENDING_FILE = "pending-changes.sqlite"  # the in-process mode's store, in the index folder
_SQLITE_BUSY_TIMEOUT_S = 30.0


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


class FilePendingChanges:
    """In-process mode: changes in an SQLite file, for the API's own job thread.

    A connection per call: the request threads add, the job thread reads and removes,
    and SQLite's own lock orders them (also across API processes sharing the folder).
    AUTOINCREMENT never hands out a removed sequence number again."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)  # made by the first change: a mistyped folder stays absent

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=_SQLITE_BUSY_TIMEOUT_S)) as db:
            db.execute("PRAGMA synchronous = FULL")  # on disk when commit returns
            db.execute(
                "CREATE TABLE IF NOT EXISTS changes ("
                "seq INTEGER PRIMARY KEY AUTOINCREMENT, change TEXT NOT NULL)"
            )
            with db:  # commits, or rolls back on an exception
                yield db

    def add(self, changes: Sequence[ItemChange]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO changes (change) VALUES (?)", [(c.to_json(),) for c in changes]
            )

    def pending(self) -> list[PendingChange]:
        if not self.path.exists():
            return []
        with self._transaction() as db:
            rows = db.execute("SELECT seq, change FROM changes ORDER BY seq").fetchall()
        return [PendingChange(int(seq), ItemChange.from_json(text)) for seq, text in rows]

    def remove(self, seqs: Sequence[int]) -> None:
        if seqs:
            with self._transaction() as db:
                db.executemany("DELETE FROM changes WHERE seq = ?", [(int(s),) for s in seqs])

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
    """Redis when ``settings.redis_url`` is set (workers apply), else the index
    folder's :data:`PENDING_FILE`."""
    if not settings.redis_url:
        return FilePendingChanges(Path(settings.index_dir) / PENDING_FILE)
    connection = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
    )
    return RedisPendingChanges(connection, settings.queue_name)


def remove_unused_uploads(settings: Settings, store: PendingChanges | None = None) -> None:
    """After a publish and prune: delete the uploaded photos that neither a snapshot
    nor a pending change (``store``; default the one ``settings`` name) uses any more.
    Housekeeping: a failure is logged, never raised into the job that published."""
    own = store is None
    pending = create_pending_changes(settings) if store is None else store
    try:
        remove_orphan_uploads(
            settings.index_dir, lambda: [entry.change for entry in pending.pending()]
        )
    except (JobQueueUnavailableError, sqlite3.Error, OSError) as exc:
        logger.warning("uploaded photos not cleaned up: %s", exc)
    finally:
        if own:
            pending.close()
