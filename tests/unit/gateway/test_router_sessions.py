"""AppRouter: long-lived connections (long_lived option) and session affinity pins.

Each test runs its own event loop with `asyncio.run`; no network, no clock waits.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tidal.backends.base import Runner, RunnerState
from tidal.domain.router import AppRouter
from tidal.spec import build_options


def _runner(rid: str) -> Runner:
    return Runner(id=rid, app="a", revision=1, backend="local", log_path=Path("x"),
                  state=RunnerState.IDLE)  # fmt: skip


def _router(*runners: Runner, **options: object) -> AppRouter:
    router = AppRouter(max_multiplexing=1, max_waiting=100, on_change=lambda: None)
    router.configure(build_options({"exposed_port": 8000, **options}))
    for r in runners:
        router.add(r)
    return router


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


# -- long-lived connections -----------------------------------------------------------


def test_separate_websocket_leaves_the_request_slot_free() -> None:
    async def main() -> None:
        a = _runner("a")
        router = _router(a)
        runner, holds_slot = await router.open_long_lived()
        assert (runner, holds_slot) == (a, False)
        assert (a.in_flight, a.long_lived) == (0, 1)
        assert await router.acquire() is a  # the request is not starved
        router.close_long_lived(a)
        assert a.long_lived == 0

    asyncio.run(main())


def test_slot_mode_websocket_holds_the_only_slot() -> None:
    async def main() -> None:
        a = _runner("a")
        router = _router(a, long_lived="slot")
        runner, holds_slot = await router.open_long_lived()
        assert runner is a and holds_slot and a.in_flight == 1
        request = asyncio.ensure_future(router.acquire())
        await _settle()
        assert not request.done()  # fal's semantics: the request waits for the slot
        router.release(a)
        assert await request is a

    asyncio.run(main())


def test_max_long_lived_falls_back_to_a_request_slot() -> None:
    async def main() -> None:
        a = _runner("a")
        router = _router(a, max_long_lived=1)
        assert await router.open_long_lived() == (a, False)
        runner, holds_slot = await router.open_long_lived()
        assert runner is a and holds_slot and (a.in_flight, a.long_lived) == (1, 1)

    asyncio.run(main())


def test_websocket_waits_for_a_first_runner_then_frees_its_slot() -> None:
    async def main() -> None:
        router = _router()
        opening = asyncio.ensure_future(router.open_long_lived())
        await _settle()
        assert len(router.waits(0.0)) == 1  # scale from zero sees it as demand
        a = _runner("a")
        router.add(a)
        assert await opening == (a, False)
        assert (a.in_flight, a.long_lived) == (0, 1)

    asyncio.run(main())


def test_event_stream_gives_its_slot_to_a_waiting_request() -> None:
    async def main() -> None:
        a = _runner("a")
        router = _router(a)
        assert await router.acquire() is a
        waiting = asyncio.ensure_future(router.acquire())
        await _settle()
        assert router.to_long_lived(a)  # the answer turned out to be an event stream
        assert await waiting is a
        assert (a.in_flight, a.long_lived) == (1, 1)

    asyncio.run(main())


# -- affinity -------------------------------------------------------------------------


def test_pinned_key_waits_for_its_runner_while_others_go_elsewhere() -> None:
    async def main() -> None:
        a, b = _runner("a"), _runner("b")
        router = _router(a, b)
        assert await router.acquire("client-1") is a
        router.release(a)
        assert await router.acquire("client-1") is a  # pinned
        pinned = asyncio.ensure_future(router.acquire("client-1"))
        await _settle()
        assert not pinned.done()  # b is free, but client-1 belongs to a
        assert await router.acquire("client-2") is b  # a later key is not held up
        router.release(a)
        assert await pinned is a

    asyncio.run(main())


def test_key_moves_when_its_runner_is_gone() -> None:
    async def main() -> None:
        a, b = _runner("a"), _runner("b")
        router = _router(a, b)
        assert await router.acquire("k") is a
        pinned = asyncio.ensure_future(router.acquire("k"))
        await _settle()
        assert not pinned.done()
        a.state = RunnerState.FAILED
        router.remove(a)
        assert await pinned is b
        router.release(b)
        assert await router.acquire("k") is b  # and stays there

    asyncio.run(main())


def test_websocket_and_requests_of_a_key_share_a_runner() -> None:
    async def main() -> None:
        a, b = _runner("a"), _runner("b")
        router = _router(a, b)
        assert await router.open_long_lived("x") == (a, False)
        assert await router.open_long_lived("y") == (b, False)  # least connections
        assert await router.acquire("y") is b
        assert await router.acquire("x") is a

    asyncio.run(main())
