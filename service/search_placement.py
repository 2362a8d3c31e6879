"""Where a search runs: on the event loop when it is known to be short, else in the
threadpool.

The threadpool hop (hand the call to a worker thread, wake it, wake the loop again
when it is done) cost about as much as a whole HNSW search over 100k vectors
(0.4-0.5 ms) in the profile of issue #17. A search known to take less than the
budget therefore runs inline; a long one (Flat over a large catalog) keeps the loop
free for other requests. "Known" is measured, not guessed from the factory: every
unrestricted search on a snapshot updates a moving average of its cost, and the
first searches of a new snapshot run in the threadpool until there is one.
Searches restricted by kinds or filters always go to the threadpool: their cost
depends on the request (exact scans, widened beams, the filter field check).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")

SMOOTHING = 0.2  # weight of the newest search in the moving average


@dataclass
class SearchPlacement:
    """Per live snapshot version, the moving average of an unrestricted search's cost."""

    budget_ms: float  # inline when the average is at most this; 0 = always the threadpool
    _version: str | None = None
    _cost_ms: float | None = field(default=None)

    def runs_inline(self, version: str, restricted: bool) -> bool:
        if restricted or self.budget_ms <= 0 or version != self._version:
            return False
        return self._cost_ms is not None and self._cost_ms <= self.budget_ms

    def record(self, version: str, restricted: bool, cost_ms: float) -> None:
        """One search's own cost (without the hop). Threads race here harmlessly: a lost
        update only delays the average by one search."""
        if restricted:
            return
        if version != self._version or self._cost_ms is None:
            self._version, self._cost_ms = version, cost_ms
            return
        self._cost_ms += SMOOTHING * (cost_ms - self._cost_ms)

    async def run(self, version: str, restricted: bool, call: Callable[[], T]) -> T:
        """``call()`` inline or in the threadpool, its cost recorded either way."""

        def timed() -> T:
            started = time.perf_counter()
            try:
                return call()
            finally:
                self.record(version, restricted, (time.perf_counter() - started) * 1000)

        if self.runs_inline(version, restricted):
            return timed()
        return await run_in_threadpool(timed)
