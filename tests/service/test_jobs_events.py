"""Snapshot events: published versions reach subscribers; Redis trouble never escapes."""

from __future__ import annotations

import queue
import socket
import time

from service.events import publish_snapshot_event, subscribe_snapshot_events


def test_published_versions_reach_every_subscriber(clean_redis: str) -> None:
    received: list[queue.Queue[str]] = [queue.Queue(), queue.Queue()]
    subscriptions = [subscribe_snapshot_events(clean_redis, inbox.put) for inbox in received]
    try:
        assert all(sub.wait_subscribed(10) for sub in subscriptions)
        assert publish_snapshot_event(clean_redis, "20240101T000000Z-aaaa") == 2
        publish_snapshot_event(clean_redis, "20240101T000001Z-bbbb")
        for inbox in received:
            assert inbox.get(timeout=5) == "20240101T000000Z-aaaa"
            assert inbox.get(timeout=5) == "20240101T000001Z-bbbb"
    finally:
        for sub in subscriptions:
            sub.close()


def test_events_stay_within_their_redis_database(clean_redis: str) -> None:
    """Two deployments on one Redis server, in databases N and N+1, do not cross-talk."""
    base, _, db = clean_redis.rpartition("/")
    other_db = f"{base}/{(int(db or 0) + 1) % 16}"
    mine: queue.Queue[str] = queue.Queue()
    subscription = subscribe_snapshot_events(clean_redis, mine.put)
    try:
        assert subscription.wait_subscribed(10)
        publish_snapshot_event(other_db, "20240101T000000Z-othr")  # sent first: would arrive first
        assert publish_snapshot_event(clean_redis, "20240101T000001Z-mine") == 1
        assert mine.get(timeout=5) == "20240101T000001Z-mine"
        assert mine.empty()
    finally:
        subscription.close()


def test_a_failing_callback_does_not_end_the_subscription(clean_redis: str) -> None:
    seen: queue.Queue[str] = queue.Queue()

    def flaky(version: str) -> None:
        seen.put(version)
        if version == "bad":
            raise RuntimeError("refresh failed")

    subscription = subscribe_snapshot_events(clean_redis, flaky)
    try:
        assert subscription.wait_subscribed(10)
        publish_snapshot_event(clean_redis, "bad")
        publish_snapshot_event(clean_redis, "good")
        assert seen.get(timeout=5) == "bad"
        assert seen.get(timeout=5) == "good"
    finally:
        subscription.close()


def test_unreachable_redis_keeps_retrying_quietly_and_closes_promptly() -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subscription = subscribe_snapshot_events(f"redis://127.0.0.1:{port}/0", lambda v: None)
    assert not subscription.wait_subscribed(1.5)
    started = time.monotonic()
    subscription.close()
    assert time.monotonic() - started < 5
    assert not subscription.running
