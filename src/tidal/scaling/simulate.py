"""Replay a request trace against the platform's own scaling controller in virtual time.

The simulator answers "what would these scaling options cost, and how long would
requests wait?" before anything is deployed. It is not a model of the platform: it
runs the live `Controller` (reconcile, launches, readiness, stops) and the live
`AppRouter` (slots, the FIFO of waiting requests) on a `ManualClock`, with runners
from the in-memory backend, so the two cannot disagree. What it adds is the part a
deployment does not have: the requests of the trace, and the order of time.

- One discrete-event loop moves the clock from one instant to the next: a request
  arrives, a request ends (its slot frees), a sleeper of the controller wakes (a
  readiness probe, a backoff), a tick is due, a waiting request reaches
  `request_timeout`. Each request is a call to the router, not an asyncio task.
- The controller reconciles as its live loop does: when something woke it (a
  request starts waiting, a slot frees, a runner becomes ready or ends), once per
  instant however many woke it, again at once if that reconcile woke it; otherwise
  on its tick, `tick` seconds after its last reconcile. Between wakes `decide()`
  sees the clock only through two thresholds: a waiting request reaching
  `scaling_delay` and an idle runner reaching `keep_alive`; so the simulator runs
  the tick only at the first tick at or after such a threshold, or after a change
  that woke nobody (a request handed to an idle runner, a request dropped at
  `request_timeout`): every other tick would see the inputs of the previous
  reconcile and change nothing. `reference=True` runs every tick, as the live loop
  (slower; the tests check that both give the same results).
- A runner takes requests `cold_start` seconds after it is started (its readiness
  probe answers then, to the instant), and stops at once when told to.
- The app is deployed at t=0: that first reconcile starts `min_concurrency` runners.
  Runner-seconds count from start to stop; runners still up when the work is over
  (kept by min_concurrency or a buffer) count until the last request ended or the
  last runner became ready or stopped, whichever is later.
- With `request_timeout`, as in the gateway, a request that waits that long gives up
  its place in the queue, and one whose wait plus service time exceeds it gives its
  slot back at the timeout; both count as timed out.

No wall clock and no I/O (parsing takes the file's text); no runner process starts.
"""

from __future__ import annotations

import asyncio
import bisect
import csv
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from tidal.config import PlatformConfig
from tidal.domain.app import AppRecord
from tidal.domain.deployment import Deployment
from tidal.domain.router import AppRouter, RouterError
from tidal.domain.runner import SERVING, Address, Runner
from tidal.machines import HostCapacity, default_catalog
from tidal.scaling.clock import ManualClock, settle
from tidal.scaling.controller import Controller
from tidal.scaling.fakes import MemoryBackend
from tidal.scaling.placement import Inventory
from tidal.spec import AppOptions, AppSpec

DEFAULT_COLD_START = 5.0
DEFAULT_TICK = PlatformConfig.tick_seconds
DEFAULT_MAX_CONCURRENCY = PlatformConfig.default_max_concurrency
DEFAULT_MAX_WAITING = PlatformConfig.max_waiting_per_app

_EPS = 1e-9
# Room for any number of runners: the simulator asks how an app scales, not whether
# the host has space (the controller still places each runner on it).
_HOST = HostCapacity(cpus=1e9, memory_mb=10**15)


class TraceError(ValueError):
    """A trace that cannot be read; the message names the line."""


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival: seconds from the start, and seconds of service."""

    arrivals: tuple[float, ...]
    durations: tuple[float, ...]

    @classmethod
    def of(cls, requests: Iterable[tuple[float, float]]) -> Trace:
        pairs = sorted(((float(a), float(d)) for a, d in requests), key=lambda p: p[0])
        for arrival, duration in pairs:
            if not (math.isfinite(arrival) and arrival >= 0):
                raise TraceError(f"arrival {arrival!r} must be a number of seconds >= 0")
            if not (math.isfinite(duration) and duration >= 0):
                raise TraceError(f"duration {duration!r} must be a number of seconds >= 0")
        return cls(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))

    def __len__(self) -> int:
        return len(self.arrivals)


def parse_trace(lines: Iterable[str]) -> Trace:
    """Read `arrival,duration` rows (seconds); a header row naming the columns is optional.

    With a header the two columns may be anywhere among others; without one they
    are the first two. Blank lines and lines starting with '#' are skipped.
    """
    columns: tuple[int, int] | None = None
    pairs: list[tuple[float, float]] = []
    for lineno, row in enumerate(csv.reader(lines), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if columns is None:
            names = [c.lower() for c in cells]
            if "arrival" in names or "duration" in names or not _numbers(cells[:2]):
                if "arrival" not in names or "duration" not in names:
                    raise TraceError(
                        f"line {lineno}: expected a header naming the columns 'arrival' and "
                        f"'duration', or rows of two numbers; got {','.join(row)!r}"
                    )
                columns = (names.index("arrival"), names.index("duration"))
                continue
            columns = (0, 1)
        a, d = columns
        if len(cells) <= max(a, d):
            raise TraceError(f"line {lineno}: expected arrival and duration, got {','.join(row)!r}")
        values = []
        for name, cell in (("arrival", cells[a]), ("duration", cells[d])):
            try:
                value = float(cell)
            except ValueError:
                raise TraceError(f"line {lineno}: {name} {cell!r} is not a number") from None
            if not (math.isfinite(value) and value >= 0):
                raise TraceError(f"line {lineno}: {name} {cell!r} must be a number of seconds >= 0")
            values.append(value)
        pairs.append((values[0], values[1]))
    if not pairs:
        raise TraceError("the trace has no requests (rows of arrival,duration in seconds)")
    return Trace.of(pairs)


def _numbers(cells: list[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return len(cells) == 2


@dataclass(frozen=True)
class SimResult:
    requests: int
    served: int  # finished within request_timeout (all of them without one)
    timed_out: int  # dropped from the queue at request_timeout, or cut off while running
    timed_out_waiting: int  # of timed_out: never got a runner
    rejected: int  # found the wait queue full (HTTP 429)
    runner_seconds: float  # cost: each runner from its start to its stop
    cold_starts: int  # runners started
    cold_start_waits: int  # requests handed a runner the moment it became ready
    peak_runners: int  # the most runners up at once, starting ones included
    wait_p50: float  # queue wait, seconds, of every request not rejected
    wait_p99: float
    wait_max: float
    end: float  # when the last request ended or the last runner stopped
    policy_calls: int  # how many times decide() ran

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 < q <= 100) of sorted values; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def simulate(
    trace: Trace,
    options: AppOptions,
    *,
    cold_start: float = DEFAULT_COLD_START,
    tick: float = DEFAULT_TICK,
    default_max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    max_waiting: int = DEFAULT_MAX_WAITING,
    reference: bool = False,
) -> SimResult:
    """Replay `trace` against the controller with `options` (see the module's docstring)."""
    if cold_start < 0 or not math.isfinite(cold_start):
        raise ValueError(f"cold_start must be a number of seconds >= 0, not {cold_start!r}")
    if tick <= 0 or not math.isfinite(tick):
        raise ValueError(f"tick must be a number of seconds > 0, not {tick!r}")
    config = PlatformConfig(
        tick_seconds=tick,
        default_max_concurrency=default_max_concurrency,
        max_waiting_per_app=max_waiting,
    )
    simulation = _Simulation(trace, options, config, cold_start, reference)
    return asyncio.run(simulation.run())


@dataclass
class _SimBackend(MemoryBackend):
    """The in-memory backend, whose readiness probe waits for the server (up to its
    timeout) instead of failing at once: a runner is seen ready the instant its cold
    start ends, not at the next probe of a polling schedule."""

    virtual: ManualClock = field(default_factory=ManualClock)
    last_ready: float = 0.0  # when a runner last answered its first probe

    async def answers(self, address: Address, timeout: float) -> bool:
        server = self.servers.get(self._by_port.get(address.port, ""))
        now = self.virtual.monotonic()
        if server is not None and server.listens and now < server.answers_at:
            await self.virtual.sleep_until(min(server.answers_at, now + timeout))
        up = await super().answers(address, timeout)
        if up:
            self.last_ready = max(self.last_ready, self.virtual.monotonic())
        return up


class _Simulation:
    def __init__(
        self,
        trace: Trace,
        options: AppOptions,
        config: PlatformConfig,
        cold_start: float,
        reference: bool,
    ) -> None:
        self.arrivals = trace.arrivals
        self.durations = trace.durations
        self.timeout = options.request_timeout
        self.tick = config.tick_seconds
        self.reference = reference
        # Virtual time starts at 0 and wall time equals it, so trace times stay exact.
        self.clock = ManualClock(start=0.0, epoch=0.0)
        self.backend = _SimBackend(self.clock, cold_start=cold_start, virtual=self.clock)
        self.controller = Controller(
            config,
            {self.backend.name: self.backend},
            Inventory(_HOST, default_catalog(_HOST)),
            self.backend,
            clock=self.clock,
            run_loops=False,  # this loop runs reconcile(), at the instants it would
        )
        self.controller.on_runner_ended.append(self._runner_ended)
        spec = AppSpec(
            name="simulated", entry="app.py::f", kind="app", options=options,
            backend=self.backend.name,
        )  # fmt: skip
        self.record = AppRecord("simulator", "simulated", 1, spec, 0.0, 0.0)

        self.next_arrival = 0  # index into the trace
        self.done: list[tuple[float, int, Runner]] = []  # (end, seq, runner): slots to free
        self.seq = 0
        # Requests waiting in the router's queue, FIFO: arrival times from `qhead` on,
        # which request each is, and the future the router hands a runner through.
        # Every request waits the same request_timeout, so drops come off the front too.
        self.queue: list[float] = []
        self.queue_index: list[int] = []
        self.futures: list[asyncio.Future[Runner]] = []
        self.qhead = 0

        self.last_reconcile = 0.0
        self.changed_at: float | None = None  # a change since the last reconcile woke nobody
        self.tick_at: float | None = None
        self._tick_from: tuple[float, float | None] = (-1.0, None)  # what tick_at came from

        self.waits: list[float] = []
        self.served = self.timed_out = self.timed_out_waiting = self.rejected = 0
        self.runner_seconds = 0.0
        self.ended_runners = self.cold_start_waits = self.peak = self.calls = 0
        self.end = 0.0

    # -- the loop ----------------------------------------------------------------
    async def run(self) -> SimResult:
        dep = self.controller.apply(self.record)  # the deploy wakes it at t=0
        arrivals, done, clock = self.arrivals, self.done, self.clock
        n = len(arrivals)
        t = 0.0
        while True:
            await self._step(dep, t)
            self._schedule_tick(dep, t)
            upcoming = math.inf if self.tick_at is None else self.tick_at
            if self.next_arrival < n and arrivals[self.next_arrival] < upcoming:
                upcoming = arrivals[self.next_arrival]
            if done and done[0][0] < upcoming:
                upcoming = done[0][0]
            due = clock.next_due()
            if due is not None and due < upcoming:
                upcoming = due
            if self.timeout is not None and self.qhead < len(self.queue):
                upcoming = min(upcoming, self.queue[self.qhead] + self.timeout)
            if upcoming == math.inf:
                break
            t = max(t, upcoming)
        end = max(self.end, self.backend.last_ready)
        for r in dep.runners.values():
            self.runner_seconds += end - r.created_at
        waits = sorted(self.waits)
        return SimResult(
            requests=n,
            served=self.served,
            timed_out=self.timed_out,
            timed_out_waiting=self.timed_out_waiting,
            rejected=self.rejected,
            runner_seconds=self.runner_seconds,
            cold_starts=self.ended_runners + len(dep.runners),
            cold_start_waits=self.cold_start_waits,
            peak_runners=self.peak,
            wait_p50=percentile(waits, 50),
            wait_p99=percentile(waits, 99),
            wait_max=waits[-1] if waits else 0.0,
            end=end,
            policy_calls=self.calls,
        )

    async def _step(self, dep: Deployment, t: float) -> None:
        """Everything that happens at instant `t`, then the reconciles it wakes."""
        arrivals, done, clock, router = self.arrivals, self.done, self.clock, dep.router
        n = len(arrivals)
        tick = self.tick_at is not None and self.tick_at <= t
        if tick:
            self.tick_at = None
        while True:
            # Slots free first, then runners become ready (the probes woken here run at
            # the next settle), then requests arrive: the controller sees all of t at once.
            # Requests that take no time end at t too, before the controller looks.
            while True:
                woke = clock.move_to(t)
                while done and done[0][0] <= t:
                    router.release(heapq.heappop(done)[2])
                    self.end = t
                while woke:
                    await settle()
                    woke = clock.move_to(t)
                while self.next_arrival < n and arrivals[self.next_arrival] <= t:
                    self._arrive(router, self.next_arrival, t)
                    self.next_arrival += 1
                self._take_answers(t)
                if not (done and done[0][0] <= t):
                    break
            if self.timeout is not None:
                self._drop_timed_out(dep, t)
            while tick or dep.wake.is_set():
                tick = False
                dep.wake.clear()
                await self._reconcile(dep, t)
            if not (done and done[0][0] <= t) and clock.next_due() != t:
                return

    async def _reconcile(self, dep: Deployment, t: float) -> None:
        controller = self.controller
        before = controller.tasks_running
        controller.reconcile(dep)
        self.calls += 1
        self.last_reconcile = t
        self.changed_at = None
        self.peak = max(self.peak, len(dep.runners))  # started ones count at once
        if controller.tasks_running != before:  # it launched or stopped runners
            while True:
                await settle()
                if not self.clock.move_to(t):
                    break
            self._take_answers(t)

    # -- the requests --------------------------------------------------------------
    def _arrive(self, router: AppRouter, index: int, t: float) -> None:
        runner = router.take_free()
        if runner is not None:
            self._assign(runner, index, t)
            self._changed(t)  # no wake: a request that found a slot
            return
        try:
            future = router.wait_in_line()
        except RouterError:
            self.rejected += 1
            return
        self.queue.append(self.arrivals[index])
        self.queue_index.append(index)
        self.futures.append(future)

    def _take_answers(self, t: float) -> None:
        """Waiting requests the router has handed a runner (in FIFO order) start now."""
        futures = self.futures
        while self.qhead < len(futures) and futures[self.qhead].done():
            runner = futures[self.qhead].result()
            if runner.ready_at == t:
                self.cold_start_waits += 1  # handed a runner the moment it became ready
            self._assign(runner, self.queue_index[self.qhead], t)
            self.qhead += 1

    def _assign(self, runner: Runner, index: int, t: float) -> None:
        arrival, duration = self.arrivals[index], self.durations[index]
        wait = t - arrival
        self.waits.append(wait)
        end = t + duration
        if self.timeout is not None and wait + duration > self.timeout:
            # The gateway answers 504 at the timeout and gives the slot back then.
            self.timed_out += 1
            end = max(t, arrival + self.timeout)
        else:
            self.served += 1
        self.seq += 1
        heapq.heappush(self.done, (end, self.seq, runner))

    def _drop_timed_out(self, dep: Deployment, t: float) -> None:
        assert self.timeout is not None
        queue, timeout = self.queue, self.timeout
        dropped = False
        while self.qhead < len(queue) and queue[self.qhead] + timeout <= t:
            self.futures[self.qhead].cancel()  # the request's task gives up
            self.waits.append(t - queue[self.qhead])
            self.qhead += 1
            self.timed_out += 1
            self.timed_out_waiting += 1
            dropped = True
        if dropped:
            dep.router.dispatch()  # the router forgets them
            self.end = max(self.end, t)
            self._changed(t)  # no wake: giving up tells the controller nothing

    def _changed(self, t: float) -> None:
        if self.changed_at is None:
            self.changed_at = t

    def _runner_ended(self, runner: Runner) -> None:
        assert runner.ended_at is not None
        self.ended_runners += 1
        self.runner_seconds += runner.ended_at - runner.created_at
        self.end = max(self.end, runner.ended_at)

    # -- the controller's tick ---------------------------------------------------------
    def _first_younger_than_delay(self, t: float, delay: float) -> int:
        """Index of the first waiting request whose wait is below scaling_delay."""
        queue = self.queue
        i = bisect.bisect_right(queue, t - delay, self.qhead, len(queue))
        # Settle float rounding with the policy's own arithmetic (t - arrival >= delay).
        while i > self.qhead and t - queue[i - 1] < delay:
            i -= 1
        while i < len(queue) and t - queue[i] >= delay:
            i += 1
        return i

    def _schedule_tick(self, dep: Deployment, t: float) -> None:
        """The next tick that could see inputs unlike the last reconcile's.

        Unless a change woke nobody since (`changed_at`, the earliest such instant),
        the state is what the last reconcile saw, so what can differ is a threshold
        that reconcile had not reached yet, whether or not it has passed by now.
        """
        last = self.last_reconcile
        due = self.changed_at
        if not self.reference and self._tick_from == (last, due):
            return  # nothing it depends on moved since it was computed
        self._tick_from = (last, due)
        options = dep.record.options
        if due is None:
            keep_alive = options.keep_alive
            for r in dep.runners.values():
                if (
                    r.state in SERVING
                    and r.in_flight + r.long_lived == 0
                    and last - r.idle_since < keep_alive
                ):
                    due = _earliest(due, r.idle_since + keep_alive)
            delay = options.scaling_delay
            if delay and dep.runners:
                i = self._first_younger_than_delay(last, delay)
                if i < len(self.queue):
                    due = _earliest(due, self.queue[i] + delay)
        tick = self.tick
        if self.reference:
            busy = (
                due is not None
                or self.done
                or self.next_arrival < len(self.arrivals)
                or self.qhead < len(self.queue)
                or self.clock.next_due() is not None
            )
            self.tick_at = max(t, last + tick) if busy else None
            return
        if due is None:
            self.tick_at = None
            return
        # Ticks fall at last + k * tick until something wakes the controller. A tick
        # due now (t > last) runs in another step at t: it sees what happened at t.
        k = max(1, math.ceil((max(due, t) - last) / tick - _EPS))
        self.tick_at = max(t, last + k * tick)


def _earliest(a: float | None, b: float) -> float:
    return b if a is None or b < a else a
