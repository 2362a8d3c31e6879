"""SearchPlacement: a search runs inline only once it is measured short on this snapshot."""

from __future__ import annotations

import asyncio
import threading

from service.search_placement import SearchPlacement


def where_it_ran(placement: SearchPlacement, version: str, restricted: bool = False) -> str:
    loop_thread = threading.get_ident()

    def call() -> str:
        return "inline" if threading.get_ident() == loop_thread else "threadpool"

    async def go() -> str:
        nonlocal loop_thread
        loop_thread = threading.get_ident()
        return await placement.run(version, restricted, call)

    return asyncio.run(go())


def test_first_search_of_a_snapshot_goes_to_the_threadpool_then_inline() -> None:
    placement = SearchPlacement(budget_ms=50.0)

    assert where_it_ran(placement, "v1") == "threadpool"
    assert where_it_ran(placement, "v1") == "inline"
    assert where_it_ran(placement, "v2") == "threadpool"  # a new snapshot is measured anew


def test_restricted_and_unbudgeted_searches_stay_in_the_threadpool() -> None:
    placement = SearchPlacement(budget_ms=50.0)
    where_it_ran(placement, "v1")
    assert where_it_ran(placement, "v1", restricted=True) == "threadpool"

    unbudgeted = SearchPlacement(budget_ms=0.0)
    for _ in range(3):
        assert where_it_ran(unbudgeted, "v1") == "threadpool"


def test_a_search_over_budget_moves_back_to_the_threadpool() -> None:
    placement = SearchPlacement(budget_ms=1.0)
    placement.record("v1", False, 0.2)
    assert placement.runs_inline("v1", False)

    for _ in range(10):  # the average follows a snapshot that became slow
        placement.record("v1", False, 30.0)

    assert not placement.runs_inline("v1", False)
    placement.record("v1", True, 0.0)  # restricted searches do not move the average
    assert not placement.runs_inline("v1", False)


def test_inline_and_threadpool_return_the_same_value_and_errors() -> None:
    placement = SearchPlacement(budget_ms=50.0)

    async def both() -> list[object]:
        first = await placement.run("v1", False, lambda: [1, 2, 3])  # threadpool
        second = await placement.run("v1", False, lambda: [1, 2, 3])  # inline
        return [first, second]

    assert asyncio.run(both()) == [[1, 2, 3], [1, 2, 3]]

    def fails() -> None:
        raise ValueError("bad query")

    for _ in range(2):  # once in the threadpool, once inline: the same error surfaces
        try:
            asyncio.run(placement.run("v1", False, fails))
        except ValueError as exc:
            assert str(exc) == "bad query"
        else:
            raise AssertionError("the search's error was swallowed")
