"""The one polling helper of the tests: ask again until the answer is the expected one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(
    probe: Callable[[], T], done: Callable[[T], bool], *, timeout_s: float, interval_s: float = 0.05
) -> T:
    """Call ``probe`` until ``done(answer)`` holds or ``timeout_s`` has passed.

    Returns the last answer either way: the caller asserts on it, so a timeout
    fails with what was last seen in the message.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        answer = probe()
        if done(answer) or time.monotonic() >= deadline:
            return answer
        time.sleep(interval_s)
