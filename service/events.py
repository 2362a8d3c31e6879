"""Snapshot events on Redis pub/sub: "version V is live now".

The worker publishes after a snapshot is published; every API process subscribes
and hot-swaps at once instead of waiting for its next CURRENT poll. Pub/sub is
fire-and-forget: events sent while a subscriber is disconnected are lost, which is
why the API keeps polling CURRENT as the fallback. So the subscriber only has to
stay alive: it reconnects with backoff and never lets Redis trouble reach the API.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

logger = logging.getLogger(__name__)

SNAPSHOT_CHANNEL = "mmsearch:snapshots"  # + ":db<N>", see snapshot_channel
CONNECT_TIMEOUT_S = 5.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
POLL_INTERVAL_S = 1.0  # how quickly close() is noticed while waiting for messages

REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def snapshot_channel(client: redis.Redis) -> str:
    """The channel of the client's database. Redis pub/sub channels are server-wide,
    not per database, so two deployments sharing one Redis through different
    databases (``redis://host/1`` and ``/2``) would otherwise hear each other's
    snapshot events."""
    return f"{SNAPSHOT_CHANNEL}:db{client.connection_pool.connection_kwargs.get('db', 0)}"


def publish_snapshot_event(redis_url: str, version: str) -> int:
    """Announce a published snapshot; returns how many subscribers received it."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S)
    try:
        return int(client.publish(snapshot_channel(client), version))
    finally:
        client.close()


class SnapshotSubscription:
    """A daemon thread that calls ``on_version(version)`` for every snapshot event."""

    def __init__(self, redis_url: str, on_version: Callable[[str], None]) -> None:
        self._redis_url = redis_url
        self._on_version = on_version
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="mmsearch-snapshot-events", daemon=True
        )

    def start(self) -> SnapshotSubscription:
        self._thread.start()
        return self

    def wait_subscribed(self, timeout: float) -> bool:
        """True once the subscription is live (events published earlier are lost)."""
        return self._subscribed.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = FIRST_BACKOFF_S
        while not self._stop.is_set():
            try:
                self._listen(on_subscribed=self._subscribed.set)
                backoff = FIRST_BACKOFF_S
            except REDIS_DOWN as exc:
                logger.warning(
                    "snapshot events: Redis unavailable (%s); retrying in %.1fs", exc, backoff
                )
                self._subscribed.clear()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _listen(self, on_subscribed: Callable[[], None]) -> None:
        client = redis.Redis.from_url(
            self._redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S, health_check_interval=30
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(snapshot_channel(client))
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=POLL_INTERVAL_S)
                if pubsub.subscribed:
                    on_subscribed()
                if message is not None and message["type"] == "message":
                    self._deliver(message["data"])
        finally:
            pubsub.close()
            client.close()

    def _deliver(self, data: bytes | str) -> None:
        version = data.decode() if isinstance(data, bytes) else data
        try:
            self._on_version(version)
        except Exception:
            # The callback belongs to the API; one failed refresh must not end the
            # subscription (the CURRENT poll retries it). Logged with its traceback.
            logger.exception("snapshot events: refreshing to version %s failed", version)


def subscribe_snapshot_events(
    redis_url: str, on_version: Callable[[str], None]
) -> SnapshotSubscription:
    """Start listening in the background; call ``.close()`` on the handle to stop."""
    return SnapshotSubscription(redis_url, on_version).start()
