"""Per-app slots: which ready runner takes the next request, and who waits.

Holding requests while no runner has a free slot is the normal mode of the
data path (scale from zero is the same case as "all busy"): they wait in a
bounded FIFO and are handed a runner as soon as a slot frees or a runner
becomes ready.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from tidal.backends.base import Runner, RunnerState

# Runner hints remembered per app (the least recently used go first).
MAX_HINTS = 10_000


class RouterError(Exception):
    """A request that cannot be given a runner; carries the HTTP answer."""

    def __init__(
        self, status: int, error_type: str, detail: str, retry_after: int | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error_type = error_type
        self.detail = detail
        self.retry_after = retry_after


class AppRouter:
    def __init__(
        self, max_multiplexing: int, max_waiting: int, on_change: Callable[[], None]
    ) -> None:
        self.max_multiplexing = max_multiplexing
        self.max_waiting = max_waiting
        self.runners: dict[str, Runner] = {}
        self._waiters: deque[tuple[float, asyncio.Future[Runner]]] = deque()
        self._on_change = on_change  # wakes the scaling controller
        self._hints: OrderedDict[str, str] = OrderedDict()  # runner hint -> runner id

    # -- what the controller reads -----------------------------------------
    def waits(self, now: float) -> tuple[float, ...]:
        return tuple(now - t for t, fut in self._waiters if not fut.done())

    @property
    def executing(self) -> int:
        return sum(r.in_flight for r in self.runners.values())

    # -- the request path --------------------------------------------------
    def _can_take(self, r: Runner) -> bool:
        return (
            r.state is RunnerState.READY and not r.suspect and r.in_flight < self.max_multiplexing
        )

    def _free_runner(self) -> Runner | None:
        best: Runner | None = None
        for r in self.runners.values():
            if self._can_take(r) and (best is None or r.in_flight < best.in_flight):
                best = r
        return best

    def prefer(self, runner: Runner, hint: str | None) -> Runner:
        """fal's X-Fal-Runner-Hint, best effort: move the slot just acquired on `runner`
        to the runner that last served `hint` (or the runner of that id) when it can take
        a request now; the runner chosen becomes the hint's. Never waits for it."""
        if not hint:
            return runner
        hinted = self.runners.get(self._hints.get(hint, hint))
        chosen = runner
        if hinted is not None and hinted is not runner and self._can_take(hinted):
            hinted.in_flight += 1
            self._give_back(runner)
            chosen = hinted
        self._hints[hint] = chosen.id
        self._hints.move_to_end(hint)
        if len(self._hints) > MAX_HINTS:
            self._hints.popitem(last=False)
        return chosen

    async def acquire(self) -> Runner:
        runner = self._free_runner() if not self._waiters else None
        if runner is not None:
            runner.in_flight += 1
            return runner
        if len(self._waiters) >= self.max_waiting:
            raise RouterError(
                429,
                "queue_full",
                f"the app's wait queue is full ({self.max_waiting} requests); retry later",
                retry_after=1,
            )
        fut: asyncio.Future[Runner] = asyncio.get_running_loop().create_future()
        entry = (time.monotonic(), fut)
        self._waiters.append(entry)
        self._on_change()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Handed a slot just as we gave up: give it back; it served nothing.
                fut.result().in_flight -= 1
                self.dispatch()
            raise
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def release(self, runner: Runner) -> None:
        runner.served += 1
        self._give_back(runner)

    def _give_back(self, runner: Runner) -> None:
        runner.in_flight -= 1
        if runner.in_flight == 0:
            runner.idle_since = time.monotonic()
        self.dispatch()
        self._on_change()

    def dispatch(self) -> None:
        """Hand free slots to waiters, oldest first."""
        while self._waiters:
            _, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            runner = self._free_runner()
            if runner is None:
                return
            self._waiters.popleft()
            runner.in_flight += 1
            fut.set_result(runner)

    # -- what the controller changes ---------------------------------------
    def add(self, runner: Runner) -> None:
        self.runners[runner.id] = runner
        self.dispatch()

    def remove(self, runner: Runner) -> None:
        self.runners.pop(runner.id, None)

    def fail_waiters(self, error: RouterError) -> None:
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(error)
