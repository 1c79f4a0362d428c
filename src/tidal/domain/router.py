"""Per-app slots: which ready runner takes the next request, and who waits.

Holding requests while no runner has a free slot is the normal mode of the
data path (scale from zero is the same case as "all busy"): they wait in a
bounded FIFO and are handed a runner as soon as a slot frees or a runner
becomes ready.

Long-lived connections (a WebSocket, an event-stream answer) are counted apart from
requests when the app's `long_lived` option is "separate": they take one of the runner's
`max_long_lived` connection places instead of a `max_multiplexing` request slot, so a
client's progress channel cannot starve its own requests (docs/web-servers.md).

Session affinity (the app's `affinity` option) pins a key (a cookie, a header, a query
parameter) to the runner that first served it: later requests with that key wait for
that runner's slot rather than going elsewhere, and move only when it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from tidal.domain.runner import SERVING, Runner, RunnerState
from tidal.spec import AppOptions

# Runner hints and affinity keys remembered per app (the least recently used go first).
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
        self,
        max_multiplexing: int,
        max_waiting: int,
        on_change: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_multiplexing = max_multiplexing
        self._clock = clock  # monotonic seconds (the controller's, so tests can step it)
        self.max_waiting = max_waiting
        self.runners: dict[str, Runner] = {}
        # (since, future, the runner id it is pinned to by affinity or None)
        self._waiters: deque[_Waiter] = deque()
        self._on_change = on_change  # wakes the scaling controller
        self._hints: OrderedDict[str, str] = OrderedDict()  # runner hint -> runner id
        self._pins: OrderedDict[str, str] = OrderedDict()  # affinity key -> runner id
        self.long_lived_separate = False
        self.max_long_lived = 1

    def configure(self, options: AppOptions) -> None:
        self.max_multiplexing = options.max_multiplexing
        self.long_lived_separate = options.long_lived == "separate"
        self.max_long_lived = options.max_long_lived
        self.dispatch()

    # -- what the controller reads -----------------------------------------
    def waits(self, now: float) -> tuple[float, ...]:
        if not self._waiters:
            return ()
        return tuple([now - w.since for w in self._waiters if not w.future.done()])

    @property
    def executing(self) -> int:
        return sum([r.in_flight for r in self.runners.values()])

    # -- the request path --------------------------------------------------
    def _can_take(self, r: Runner) -> bool:
        return r.state in SERVING and not r.suspect and r.in_flight < self.max_multiplexing

    def _free_runner(self) -> Runner | None:
        # On every request: _can_take inlined, and no look further than an idle runner.
        best: Runner | None = None
        most = self.max_multiplexing
        for r in self.runners.values():
            if r.state not in SERVING or r.suspect or r.in_flight >= most:
                continue
            # Ties go to the runner with fewer open WebSockets (and affinity pins' clients).
            if best is None or (r.in_flight, r.long_lived) < (best.in_flight, best.long_lived):
                best = r
                if not r.in_flight and not r.long_lived:
                    break  # none is less loaded
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
            self._take(hinted)
            self._give_back(runner)
            chosen = hinted
        _remember(self._hints, hint, chosen.id)
        return chosen

    def _pinned(self, key: str | None) -> str | None:
        """The runner id `key` is pinned to, while that runner is ready to serve it."""
        rid = self._pins.get(key) if key else None
        runner = self.runners.get(rid) if rid else None
        if runner is None or runner.state not in SERVING or runner.suspect:
            return None
        return rid

    def _pick(self, pin: str | None) -> Runner | None:
        if pin is None:
            return self._free_runner()
        runner = self.runners.get(pin)
        return runner if runner is not None and self._can_take(runner) else None

    def has_free_slot(self, key: str | None = None) -> bool:
        """Whether acquire(key) would return at once (no one waits, a runner can take it)."""
        return not self._waiters and self._pick(self._pinned(key)) is not None

    async def acquire(self, key: str | None = None) -> Runner:
        """A slot on a runner: the one `key` (an affinity key) is pinned to, waiting for
        it if busy; else the least loaded. The runner chosen becomes the key's."""
        runner = await self._acquire(self._pinned(key))
        if key:
            _remember(self._pins, key, runner.id)
        return runner

    async def _acquire(self, pin: str | None) -> Runner:
        runner = self._take_free(pin)
        if runner is not None:
            return runner
        entry = self._enqueue(pin)
        fut = entry.future
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Handed a slot just as we gave up: give it back; it served nothing.
                self._give_back(fut.result())
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _take_free(self, pin: str | None) -> Runner | None:
        runner = self._pick(pin) if not self._waiters else None
        if runner is not None:
            self._take(runner)
        return runner

    def _enqueue(self, pin: str | None) -> _Waiter:
        if len(self._waiters) >= self.max_waiting:
            raise RouterError(
                429,
                "queue_full",
                f"the app's wait queue is full ({self.max_waiting} requests); retry later",
                retry_after=1,
            )
        fut: asyncio.Future[Runner] = asyncio.get_running_loop().create_future()
        entry = _Waiter(self._clock(), fut, pin)
        self._waiters.append(entry)
        if self._pins:
            self.dispatch()  # with pins, a runner may be free while others' waiters wait
        self._on_change()
        return entry

    # -- the same, without a task per request (the simulator) ----------------
    def take_free(self) -> Runner | None:
        """A slot now, as acquire() takes one when no one waits; None if it would wait."""
        return self._take_free(None)

    def wait_in_line(self) -> asyncio.Future[Runner]:
        """Join the queue as acquire() does when no slot is free: the future gets the
        runner when dispatch() hands it one. A caller that gives up cancels it (the
        queue forgets it at the next dispatch). Raises RouterError (429) when full."""
        return self._enqueue(None).future

    def release(self, runner: Runner) -> None:
        runner.served += 1
        self._give_back(runner)

    # -- long-lived connections ----------------------------------------------
    def _can_hold(self, r: Runner) -> bool:
        return r.state in SERVING and not r.suspect and r.long_lived < self.max_long_lived

    async def open_long_lived(self, key: str | None = None) -> tuple[Runner, bool]:
        """A runner for a WebSocket: (runner, True) when it holds a request slot (the
        app's long_lived is "slot", or every runner's connection places are taken), else
        (runner, False): one of its long-lived places, released by close_long_lived."""
        if self.long_lived_separate:
            pin = self._pinned(key)
            pinned = self.runners.get(pin) if pin else None
            if pinned is not None and self._can_hold(pinned):
                best: Runner | None = pinned
            elif pin is not None:
                best = None
            else:
                best = min(
                    (r for r in self.runners.values() if self._can_hold(r)),
                    key=lambda r: r.long_lived,
                    default=None,
                )
            if best is not None:
                best.long_lived += 1
                if key:
                    _remember(self._pins, key, best.id)
                return best, False
        # No runner yet (scale from zero goes through the request queue) or none with
        # room: wait for a request slot, then hand it back if a place is free there.
        runner = await self.acquire(key)
        return runner, not self.to_long_lived(runner)

    def to_long_lived(self, runner: Runner) -> bool:
        """Turn the request slot held on `runner` into a long-lived place, when the app
        counts them apart and the runner has room; True when it did."""
        if not self.long_lived_separate or runner.long_lived >= self.max_long_lived:
            return False
        runner.long_lived += 1
        runner.served += 1
        self._give_back(runner)
        return True

    def close_long_lived(self, runner: Runner) -> None:
        runner.long_lived -= 1
        if runner.long_lived == 0 and runner.in_flight == 0:
            runner.idle_since = self._clock()
        self._on_change()

    @staticmethod
    def _take(runner: Runner) -> None:
        runner.in_flight += 1
        if runner.state is RunnerState.IDLE:
            runner.transition(RunnerState.RUNNING)

    def _give_back(self, runner: Runner) -> None:
        runner.in_flight -= 1
        if runner.in_flight == 0:
            runner.idle_since = self._clock()
            if runner.state is RunnerState.RUNNING:
                runner.transition(RunnerState.IDLE)
        self.dispatch()
        self._on_change()

    def dispatch(self) -> None:
        """Hand free slots to waiters, oldest first; a waiter pinned to a busy runner
        lets the ones behind it go."""
        i = 0
        while i < len(self._waiters):
            waiter = self._waiters[i]
            if waiter.future.done():
                del self._waiters[i]
                continue
            runner = self._pick(waiter.pin)
            if runner is None:
                if waiter.pin is None:
                    return  # no runner is free at all
                i += 1
                continue
            del self._waiters[i]
            self._take(runner)
            waiter.future.set_result(runner)

    # -- what the controller changes ---------------------------------------
    def add(self, runner: Runner) -> None:
        self.runners[runner.id] = runner
        self.dispatch()

    def remove(self, runner: Runner) -> None:
        self.runners.pop(runner.id, None)
        # Waiters pinned to it go to any runner now (their keys move with them).
        for waiter in self._waiters:
            if waiter.pin == runner.id:
                waiter.pin = None
        self.dispatch()

    def fail_waiters(self, error: RouterError) -> None:
        while self._waiters:
            fut = self._waiters.popleft().future
            if not fut.done():
                fut.set_exception(error)


@dataclass(eq=False, slots=True)  # compared by identity
class _Waiter:
    since: float
    future: asyncio.Future[Runner]
    pin: str | None


def _remember(table: OrderedDict[str, str], key: str, runner_id: str) -> None:
    table[key] = runner_id
    table.move_to_end(key)
    if len(table) > MAX_HINTS:
        table.popitem(last=False)
