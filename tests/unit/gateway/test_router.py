"""AppRouter: which ready runner takes a request, and how waiting requests are served.

Each test runs its own event loop with `asyncio.run`; no network, no clock waits
beyond a few milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from tidal.backends.base import Runner, RunnerState
from tidal.domain.router import AppRouter, RouterError


def _runner(rid: str, state: RunnerState = RunnerState.IDLE, in_flight: int = 0) -> Runner:
    if state is RunnerState.IDLE and in_flight:
        state = RunnerState.RUNNING
    return Runner(
        id=rid,
        app="a",
        revision=1,
        backend="local",
        log_path=Path("x"),
        state=state,
        in_flight=in_flight,
    )


class Changes:
    """Counts on_change calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def _router(
    *runners: Runner, mm: int = 1, max_waiting: int = 100, on_change: Changes | None = None
) -> AppRouter:
    router = AppRouter(
        max_multiplexing=mm, max_waiting=max_waiting, on_change=on_change or Changes()
    )
    for r in runners:
        router.add(r)
    return router


def _run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def _settle() -> None:
    """Let every runnable task reach its next await."""
    for _ in range(3):
        await asyncio.sleep(0)


def _waiting(router: AppRouter) -> int:
    return len(router.waits(0.0))


# -- picking a runner -----------------------------------------------------------------------


def test_least_loaded_ready_runner_is_picked() -> None:
    async def main() -> None:
        a, b, c = _runner("a", in_flight=2), _runner("b", in_flight=0), _runner("c", in_flight=1)
        router = _router(a, b, c, mm=4)
        got = await router.acquire()
        assert got is b
        assert b.in_flight == 1
        # a tie (b and c at 1) goes to either, never to the busier a
        got = await router.acquire()
        assert got in (b, c)
        assert a.in_flight == 2
        assert router.executing == 5

    _run(main())


def test_load_spreads_across_runners() -> None:
    async def main() -> None:
        runners = [_runner(f"r{i}") for i in range(3)]
        router = _router(*runners, mm=4)
        for _ in range(6):
            await router.acquire()
        assert [r.in_flight for r in runners] == [2, 2, 2]

    _run(main())


@pytest.mark.parametrize("state", [RunnerState.SETUP, RunnerState.DRAINING])
def test_not_ready_runners_are_never_picked(state: RunnerState) -> None:
    async def main() -> None:
        other = _runner("other", state=state)
        router = _router(other, mm=4)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(router.acquire(), 0.01)
        assert other.in_flight == 0
        assert _waiting(router) == 0

    _run(main())


def test_not_ready_runner_skipped_for_a_busier_ready_one() -> None:
    async def main() -> None:
        starting = _runner("s", state=RunnerState.SETUP)
        draining = _runner("d", state=RunnerState.DRAINING)
        ready = _runner("r", in_flight=3)
        router = _router(starting, draining, ready, mm=4)
        assert await router.acquire() is ready
        assert starting.in_flight == draining.in_flight == 0

    _run(main())


def test_max_multiplexing_is_respected() -> None:
    async def main() -> None:
        r = _runner("r")
        router = _router(r, mm=2)
        assert await router.acquire() is r
        assert await router.acquire() is r
        third = asyncio.ensure_future(router.acquire())
        await _settle()
        assert not third.done()
        assert r.in_flight == 2
        assert _waiting(router) == 1
        router.release(r)
        assert await third is r
        assert r.in_flight == 2

    _run(main())


# -- waiting -----------------------------------------------------------------------------


def test_waiters_served_fifo_on_release() -> None:
    async def main() -> None:
        r = _runner("r")
        router = _router(r)
        await router.acquire()
        order: list[int] = []

        async def request(i: int) -> None:
            got = await router.acquire()
            order.append(i)
            assert got is r

        tasks = []
        for i in range(4):
            tasks.append(asyncio.ensure_future(request(i)))
            await _settle()  # each starts waiting in turn
        assert _waiting(router) == 4
        for expected in range(4):
            router.release(r)
            await _settle()
            assert order == list(range(expected + 1))
        router.release(r)
        await asyncio.gather(*tasks)
        assert r.in_flight == 0
        assert r.served == 5

    _run(main())


def test_waiters_served_fifo_when_a_runner_is_added() -> None:
    async def main() -> None:
        router = _router(mm=2)
        tasks = []
        for _ in range(3):
            tasks.append(asyncio.ensure_future(router.acquire()))
            await _settle()
        assert _waiting(router) == 3
        r = _runner("r")
        router.add(r)
        await _settle()
        assert [t.done() for t in tasks] == [True, True, False]
        assert all(t.result() is r for t in tasks[:2])
        assert r.in_flight == 2
        r2 = _runner("r2")
        router.add(r2)
        assert await tasks[2] is r2
        assert _waiting(router) == 0

    _run(main())


def test_adding_a_starting_runner_serves_nobody() -> None:
    async def main() -> None:
        router = _router()
        task = asyncio.ensure_future(router.acquire())
        await _settle()
        s = _runner("s", state=RunnerState.SETUP)
        router.add(s)
        await _settle()
        assert not task.done()
        s.transition(RunnerState.IDLE)
        router.dispatch()
        assert await task is s

    _run(main())


def test_new_request_does_not_jump_the_queue() -> None:
    async def main() -> None:
        # A runner that became ready without a dispatch yet: a newcomer must queue behind
        # the request already waiting, not take the free slot.
        s = _runner("s", state=RunnerState.SETUP)
        router = _router(s)
        first = asyncio.ensure_future(router.acquire())
        await _settle()
        s.transition(RunnerState.IDLE)
        second = asyncio.ensure_future(router.acquire())
        await _settle()
        assert not first.done()
        assert not second.done()
        router.dispatch()
        assert await first is s
        assert not second.done()
        router.release(s)
        assert await second is s

    _run(main())


def test_queue_full_raises_429() -> None:
    async def main() -> None:
        router = _router(max_waiting=2)
        waiters = [asyncio.ensure_future(router.acquire()) for _ in range(2)]
        await _settle()
        with pytest.raises(RouterError) as info:
            await router.acquire()
        assert info.value.status == 429
        assert info.value.error_type == "queue_full"
        assert "2" in info.value.detail
        r = _runner("r", in_flight=0)
        router.add(r)
        router.release(await waiters[0])
        assert await waiters[1] is r

    _run(main())


def test_max_waiting_zero_rejects_when_no_slot_is_free() -> None:
    async def main() -> None:
        r = _runner("r")
        router = _router(r, max_waiting=0)
        assert await router.acquire() is r  # a free slot needs no queue
        with pytest.raises(RouterError) as info:
            await router.acquire()
        assert info.value.status == 429

    _run(main())


def test_fail_waiters_delivers_the_error() -> None:
    async def main() -> None:
        router = _router()
        tasks = [asyncio.ensure_future(router.acquire()) for _ in range(3)]
        await _settle()
        error = RouterError(503, "app_failed", "the app cannot start")
        router.fail_waiters(error)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results == [error, error, error]
        assert _waiting(router) == 0
        # The router keeps working afterwards.
        r = _runner("r")
        router.add(r)
        assert await router.acquire() is r

    _run(main())


def test_timed_out_waiter_leaves_no_leaked_slot() -> None:
    async def main() -> None:
        r = _runner("r")
        router = _router(r, max_waiting=1)
        await router.acquire()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(router.acquire(), 0.01)
        assert _waiting(router) == 0
        assert r.in_flight == 1
        router.release(r)
        assert r.in_flight == 0
        # The slot and the queue place are both free again.
        assert await router.acquire() is r
        task = asyncio.ensure_future(router.acquire())
        await _settle()
        assert _waiting(router) == 1
        router.release(r)
        assert await task is r
        assert r.in_flight == 1

    _run(main())


def test_cancelled_waiter_skipped_by_dispatch() -> None:
    async def main() -> None:
        r = _runner("r")
        router = _router(r)
        await router.acquire()
        first = asyncio.ensure_future(router.acquire())
        second = asyncio.ensure_future(router.acquire())
        await _settle()
        first.cancel()
        router.release(r)  # before `first` has run its cleanup
        assert await second is r
        with pytest.raises(asyncio.CancelledError):
            await first
        assert r.in_flight == 1
        assert _waiting(router) == 0

    _run(main())


def test_waiter_cancelled_after_being_handed_a_slot_gives_it_back() -> None:
    async def main() -> None:
        r = _runner("r")
        router = _router(r)
        await router.acquire()
        handed = asyncio.ensure_future(router.acquire())
        nxt = asyncio.ensure_future(router.acquire())
        await _settle()
        router.release(r)  # dispatch hands the slot to `handed`...
        handed.cancel()  # ...which gives up before it could run
        with pytest.raises(asyncio.CancelledError):
            await handed
        # The slot went on to the next waiter instead of leaking.
        assert await nxt is r
        assert r.in_flight == 1
        router.release(r)
        assert r.in_flight == 0
        assert _waiting(router) == 0

    _run(main())


def test_abandoned_handoff_is_not_counted_as_served() -> None:
    async def main() -> None:
        r = _runner("r")
        router = _router(r)
        await router.acquire()
        handed = asyncio.ensure_future(router.acquire())
        await _settle()
        router.release(r)
        handed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handed
        assert r.in_flight == 0
        assert r.served == 1  # only the one request that really ran

    _run(main())


# -- what the controller sees ----------------------------------------------------------------


def test_on_change_called_when_waiting_starts_and_on_release() -> None:
    async def main() -> None:
        changes = Changes()
        r = _runner("r")
        router = _router(r, on_change=changes)
        await router.acquire()  # served at once: no wake-up needed
        assert changes.count == 0
        task = asyncio.ensure_future(router.acquire())
        await _settle()
        assert changes.count == 1  # started waiting
        router.release(r)
        assert changes.count == 2  # released
        await task
        router.release(r)
        assert changes.count == 3

    _run(main())


def test_on_change_not_called_for_a_rejected_request() -> None:
    async def main() -> None:
        changes = Changes()
        router = _router(max_waiting=0, on_change=changes)
        with pytest.raises(RouterError):
            await router.acquire()
        assert changes.count == 0

    _run(main())


def test_waits_reports_ages_of_live_waiters() -> None:
    async def main() -> None:
        router = _router()
        tasks = [asyncio.ensure_future(router.acquire()) for _ in range(2)]
        await _settle()
        now = time.monotonic() + 5.0
        ages = router.waits(now)
        assert len(ages) == 2
        assert all(4.9 <= a <= 5.5 for a in ages)
        assert ages[0] >= ages[1]  # oldest first
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert router.waits(now) == ()

    _run(main())


def test_release_updates_counters_and_idle_since() -> None:
    async def main() -> None:
        r = _runner("r")
        router = _router(r, mm=2)
        await router.acquire()
        await router.acquire()
        before = r.idle_since
        await asyncio.sleep(0.001)
        router.release(r)
        assert r.in_flight == 1
        assert r.served == 1
        assert r.idle_since == before  # still busy
        router.release(r)
        assert r.in_flight == 0
        assert r.served == 2
        assert r.idle_since > before
        assert router.executing == 0

    _run(main())


def test_remove_stops_routing_to_a_runner() -> None:
    async def main() -> None:
        a, b = _runner("a"), _runner("b", in_flight=0)
        router = _router(a, b, mm=4)
        router.remove(a)
        router.remove(a)  # idempotent
        assert await router.acquire() is b
        assert await router.acquire() is b
        assert a.in_flight == 0
        assert set(router.runners) == {"b"}

    _run(main())


# -- runner hints (X-Fal-Runner-Hint) -------------------------------------------------------


def test_a_hint_sticks_to_its_runner_while_it_has_a_free_slot() -> None:
    async def main() -> None:
        a, b = _runner("a"), _runner("b")
        router = _router(a, b, mm=1)
        busy = await router.acquire()  # a: the first free runner
        assert busy is a
        first = router.prefer(await router.acquire(), "user-7")  # a is full: b
        assert first is b
        router.release(first)
        router.release(busy)
        # Both free: without a hint a takes it; with it, b does, and no slot leaks.
        again = router.prefer(await router.acquire(), "user-7")
        assert again is b and (a.in_flight, b.in_flight) == (0, 1)
        # The hinted runner is full: the request is not held for it.
        other = router.prefer(await router.acquire(), "user-7")
        assert other is a and (a.in_flight, b.in_flight) == (1, 1)
        router.release(again)
        router.release(other)
        # A runner's own id works as a hint; an unknown hint keeps the runner given.
        assert router.prefer(await router.acquire(), "b") is b
        assert router.prefer(await router.acquire(), "fresh") is a
        assert router.prefer(a, None) is a

    _run(main())


def test_a_hint_moves_the_slot_to_a_busier_runner_with_room() -> None:
    async def main() -> None:
        a, b = _runner("a"), _runner("b")
        router = _router(a, b, mm=2)
        assert router.prefer(await router.acquire(), "h") is a  # a is the hint's now
        given = await router.acquire()  # least loaded: b
        assert given is b
        b.idle_since = 0.0
        moved = router.prefer(given, "h")
        assert moved is a and (a.in_flight, b.in_flight) == (2, 0)
        assert b.idle_since > 0.0  # the slot given back left b idle
        assert router.executing == 2

    _run(main())
