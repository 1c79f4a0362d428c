"""The controller's view of time, injected so that tests (and the simulator) can
step it: `SystemClock` in the platform, `ManualClock` in tests, moved only by
`advance()` (after Knative's fake tick provider and trio's MockClock)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: what ages and deadlines use."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch: what runners' timestamps show."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until `event` is set (True) or `timeout` seconds pass (False)."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class ManualClock:
    """Time that stands still until `advance()` moves it; sleepers wake in deadline order,
    each after everything the previous one woke has run."""

    def __init__(self, start: float = 1000.0, epoch: float = 1_700_000_000.0) -> None:
        self._now = start
        self._epoch = epoch - start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._epoch + self._now

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + max(0.0, seconds))

    async def sleep_until(self, when: float) -> None:
        """Sleep until monotonic() is exactly `when` (no rounding from adding a delay)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (max(self._now, when), next(self._order), future))
        await future

    def next_due(self) -> float | None:
        """When the earliest sleeper wakes, or None when nobody sleeps."""
        return self._sleepers[0][0] if self._sleepers else None

    def move_to(self, when: float) -> bool:
        """Set the time to `when` (never back) and wake every sleeper due by then, without
        running them (the caller lets the loop run); True when it woke any."""
        self._now = max(self._now, when)
        woke = False
        while self._sleepers and self._sleepers[0][0] <= self._now:
            future = heapq.heappop(self._sleepers)[2]
            if not future.done():
                future.set_result(None)
                woke = True
        return woke

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self.sleep(timeout))
        await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (waiter, sleeper):
            task.cancel()
        return event.is_set()

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking each sleeper due on the way."""
        end = self._now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= end:
            due, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, due)
            if not future.done():
                future.set_result(None)
                await settle()
        self._now = end
        await settle()


async def settle(rounds: int = 12) -> None:
    """Let every task that can run do so (a few rounds of the event loop)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
