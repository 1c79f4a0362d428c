"""Replay a request trace against the scaling policy in virtual time.

The simulator answers "what would these scaling options cost, and how long would
requests wait?" before anything is deployed. It calls the same `decide()` the live
controller calls, with the same inputs, at the same moments:

- The controller reconciles when something wakes it: a request starts waiting, a
  request ends (its slot frees), a runner becomes ready or ends. Events at the
  same virtual instant wake it once (the live loop coalesces wakes the same way).
- Otherwise it reconciles on a tick, `tick` seconds after its last reconcile.
  Between wakes `decide()` sees the clock only through two thresholds: a waiting
  request reaching `scaling_delay` and an idle runner reaching `keep_alive`. So
  the simulator consults the policy on the first tick at or after such a
  threshold, or after a change that woke nobody (a request handed to an idle
  runner, a request dropped at `request_timeout`); every other tick would see
  the inputs of the previous reconcile and change nothing. It also passes only
  the waits the policy can use (see `_reconcile`). `reference=True` does neither:
  every tick and every waiting request's age, as the live loop (slower; the
  tests check that both give the same results).
- Routing is the gateway's: waiting requests are served first come, first
  served, each by the least-loaded ready runner with a free slot (of
  `max_multiplexing`); a request that finds the queue full is rejected (429).
- A started runner counts toward capacity at once (the policy sees it as not
  ready) and takes requests `cold_start` seconds later. Stops are immediate.
- The app is deployed at t=0: that first reconcile starts `min_concurrency` runners,
  ready at `cold_start`. Runner-seconds count from start to stop; runners still up
  when the work is over (kept by min_concurrency or a buffer) count until the
  last request ended or the last runner stopped, whichever is later.
- With `request_timeout`, as in the gateway, a request that waits that long is
  dropped from the queue, and one whose wait plus service time exceeds it gives
  its slot back at the timeout; both count as timed out.

Pure: no wall clock and no I/O (parsing takes the file's text).
"""

from __future__ import annotations

import bisect
import csv
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass

from tidal.config import PlatformConfig
from tidal.scaling.policy import Load, RunnerView, decide
from tidal.spec import AppOptions

DEFAULT_COLD_START = 5.0
DEFAULT_TICK = PlatformConfig.tick_seconds
DEFAULT_MAX_CONCURRENCY = PlatformConfig.default_max_concurrency
DEFAULT_MAX_WAITING = PlatformConfig.max_waiting_per_app

_DONE, _READY = 0, 1  # same-instant order: slots free first, then runners join
_EPS = 1e-9


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


class _Runner:
    __slots__ = ("id", "idle_since", "in_flight", "ready", "started")

    def __init__(self, rid: str, started: float) -> None:
        self.id = rid
        self.started = started
        self.ready = False
        self.in_flight = 0
        self.idle_since = started  # as the live Runner: from creation until ready


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
    """Replay `trace` against `decide()` with `options` (see the module's docstring)."""
    if cold_start < 0 or not math.isfinite(cold_start):
        raise ValueError(f"cold_start must be a number of seconds >= 0, not {cold_start!r}")
    if tick <= 0 or not math.isfinite(tick):
        raise ValueError(f"tick must be a number of seconds > 0, not {tick!r}")
    return _Simulation(
        trace, options, cold_start, tick, default_max_concurrency, max_waiting, reference
    ).run()


class _Simulation:
    def __init__(
        self,
        trace: Trace,
        options: AppOptions,
        cold_start: float,
        tick: float,
        default_max_concurrency: int,
        max_waiting: int,
        reference: bool,
    ) -> None:
        self.arrivals = trace.arrivals
        self.durations = trace.durations
        self.options = options
        self.mm = options.max_multiplexing
        # The controller's ceiling: the app's max_concurrency, or the platform's default.
        self.ceiling = options.max_concurrency or default_max_concurrency
        self.timeout = options.request_timeout
        self.cold_start = cold_start
        self.tick = tick
        self.max_waiting = max_waiting
        self.reference = reference

        self.next_arrival = 0  # index into the trace
        self.events: list[tuple[float, int, int, _Runner]] = []  # (time, kind, seq, runner)
        self.seq = 0
        self.runners: dict[str, _Runner] = {}  # start order, as the controller's
        self.ready: list[_Runner] = []  # ready order, as the router's
        self.executing = 0
        # Waiting requests, FIFO: their arrival times from index `qhead` on. Every
        # request waits the same request_timeout, so drops also come off the front.
        self.queue: list[float] = []
        self.queue_index: list[int] = []  # which request each is
        self.qhead = 0

        self.wake = True  # the deploy wakes the controller at t=0
        self.last_reconcile = 0.0
        self.changed_at: float | None = None  # a change since the last reconcile woke nobody
        self.tick_at: float | None = None

        self.waits: list[float] = []
        self.served = self.timed_out = self.timed_out_waiting = self.rejected = 0
        self.runner_seconds = 0.0
        self.cold_starts = self.cold_start_waits = self.peak = self.calls = 0
        self.end = 0.0

    # -- the loop ----------------------------------------------------------------
    def run(self) -> SimResult:
        t = 0.0
        arrivals, events = self.arrivals, self.events
        n = len(arrivals)
        while True:
            self._step(t)
            self._schedule_tick(t)
            upcoming = []
            if self.next_arrival < n:
                upcoming.append(arrivals[self.next_arrival])
            if events:
                upcoming.append(events[0][0])
            if self.tick_at is not None:
                upcoming.append(self.tick_at)
            if self.timeout is not None and self.qhead < len(self.queue):
                upcoming.append(self.queue[self.qhead] + self.timeout)
            if not upcoming:
                break
            t = max(t, min(upcoming))
        for r in self.runners.values():
            self.runner_seconds += self.end - r.started
        waits = sorted(self.waits)
        return SimResult(
            requests=n,
            served=self.served,
            timed_out=self.timed_out,
            timed_out_waiting=self.timed_out_waiting,
            rejected=self.rejected,
            runner_seconds=self.runner_seconds,
            cold_starts=self.cold_starts,
            cold_start_waits=self.cold_start_waits,
            peak_runners=self.peak,
            wait_p50=percentile(waits, 50),
            wait_p99=percentile(waits, 99),
            wait_max=waits[-1] if waits else 0.0,
            end=self.end,
            policy_calls=self.calls,
        )

    def _step(self, t: float) -> None:
        """Everything that happens at instant `t`, then the reconciles it wakes."""
        arrivals, events = self.arrivals, self.events
        n = len(arrivals)
        if self.tick_at is not None and self.tick_at <= t:
            self.wake = True
            self.tick_at = None
        while True:
            # Slots free and runners join first, then requests arrive (and any that
            # take no time end), so the controller sees all of instant t at once.
            while (events and events[0][0] <= t) or (
                self.next_arrival < n and arrivals[self.next_arrival] <= t
            ):
                while events and events[0][0] <= t:
                    _, kind, _, runner = heapq.heappop(events)
                    if kind == _DONE:
                        self._release(runner, t)
                    else:
                        self._runner_ready(runner, t)
                while self.next_arrival < n and arrivals[self.next_arrival] <= t:
                    self._arrive(self.next_arrival, t)
                    self.next_arrival += 1
            if self.timeout is not None:
                self._drop_timed_out(t)
            if not self.wake:
                return
            while self.wake:
                self.wake = False
                self._reconcile(t)
            if not (events and events[0][0] <= t):
                return

    # -- the router ----------------------------------------------------------------
    def _free_runner(self) -> _Runner | None:
        best: _Runner | None = None
        mm = self.mm
        for r in self.ready:
            if r.in_flight < mm and (best is None or r.in_flight < best.in_flight):
                best = r
                if r.in_flight == 0:
                    break  # nobody is less loaded than idle
        return best

    def _assign(self, runner: _Runner, index: int, t: float) -> None:
        arrival, duration = self.arrivals[index], self.durations[index]
        runner.in_flight += 1
        self.executing += 1
        wait = t - arrival
        self.waits.append(wait)
        done = t + duration
        if self.timeout is not None and wait + duration > self.timeout:
            # The gateway answers 504 at the timeout and gives the slot back then.
            self.timed_out += 1
            done = max(t, arrival + self.timeout)
        else:
            self.served += 1
        self.seq += 1
        heapq.heappush(self.events, (done, _DONE, self.seq, runner))

    def _dispatch(self, t: float, on_ready: bool = False) -> None:
        queue = self.queue
        while self.qhead < len(queue):
            runner = self._free_runner()
            if runner is None:
                return
            index = self.queue_index[self.qhead]
            self.qhead += 1
            self._assign(runner, index, t)
            if on_ready:
                self.cold_start_waits += 1

    def _arrive(self, index: int, t: float) -> None:
        if self.qhead == len(self.queue):
            runner = self._free_runner()
            if runner is not None:
                self._assign(runner, index, t)
                self._changed(t)  # no wake: a request that found a slot
                return
        if len(self.queue) - self.qhead >= self.max_waiting:
            self.rejected += 1
            return
        self.queue.append(self.arrivals[index])
        self.queue_index.append(index)
        self.wake = True

    def _release(self, runner: _Runner, t: float) -> None:
        runner.in_flight -= 1
        self.executing -= 1
        if runner.in_flight == 0:
            runner.idle_since = t
        self.end = max(self.end, t)
        self._dispatch(t)
        self.wake = True

    def _runner_ready(self, runner: _Runner, t: float) -> None:
        runner.ready = True
        runner.idle_since = t
        self.ready.append(runner)
        self.end = max(self.end, t)
        self._dispatch(t, on_ready=True)
        self.wake = True

    def _drop_timed_out(self, t: float) -> None:
        assert self.timeout is not None
        queue, timeout = self.queue, self.timeout
        dropped = False
        while self.qhead < len(queue) and queue[self.qhead] + timeout <= t:
            self.waits.append(t - queue[self.qhead])
            self.qhead += 1
            self.timed_out += 1
            self.timed_out_waiting += 1
            dropped = True
        if dropped:
            self.end = max(self.end, t)
            self._changed(t)  # no wake: the request's task just gives up

    def _changed(self, t: float) -> None:
        if self.changed_at is None:
            self.changed_at = t

    # -- the controller ------------------------------------------------------------
    def _reconcile(self, t: float) -> None:
        runners = tuple(
            [
                RunnerView(r.id, r.ready, r.in_flight, t - r.idle_since)
                for r in self.runners.values()
            ]
        )
        queue, qhead = self.queue, self.qhead
        if self.reference:
            last = len(queue)
        else:
            # Only the waits the policy can use: with runners up, those past
            # scaling_delay (the oldest: the queue is FIFO); and no more than fill
            # every slot of `ceiling` runners, past which it cannot ask for more.
            last = self._first_younger_than_delay(t) if runners else len(queue)
            last = min(last, qhead + max(0, self.ceiling * self.mm - self.executing) + 1)
        waits = tuple([t - a for a in queue[qhead:last]])
        self.calls += 1
        decision = decide(
            self.options,
            max_multiplexing=self.mm,
            ceiling=self.ceiling,
            load=Load(self.executing, waits),
            runners=runners,
        )
        for _ in range(decision.start):
            self.cold_starts += 1
            runner = _Runner(f"r-{self.cold_starts}", t)
            self.runners[runner.id] = runner
            self.seq += 1
            heapq.heappush(self.events, (t + self.cold_start, _READY, self.seq, runner))
        self.peak = max(self.peak, len(self.runners))
        for rid in decision.stop:
            runner = self.runners.pop(rid)
            if not runner.ready or runner.in_flight:
                raise RuntimeError(f"the policy stopped runner {rid}, which is not idle")
            self.ready.remove(runner)
            self.runner_seconds += t - runner.started
            self.end = max(self.end, t)
            self.wake = True  # the controller hears the runner end
        self.last_reconcile = t
        self.changed_at = None

    def _first_younger_than_delay(self, t: float) -> int:
        """Index of the first waiting request whose wait is below scaling_delay."""
        queue, delay = self.queue, self.options.scaling_delay
        i = bisect.bisect_right(queue, t - delay, self.qhead, len(queue))
        # Settle float rounding with the policy's own arithmetic (t - arrival >= delay).
        while i > self.qhead and t - queue[i - 1] < delay:
            i -= 1
        while i < len(queue) and t - queue[i] >= delay:
            i += 1
        return i

    def _schedule_tick(self, t: float) -> None:
        """The next tick that could see inputs unlike the last reconcile's.

        Unless a change woke nobody since (`changed_at`, the earliest such instant),
        the state is what the last reconcile saw, so what can differ is a threshold
        that reconcile had not reached yet, whether or not it has passed by now.
        """
        last = self.last_reconcile
        due = self.changed_at
        if due is None:
            keep_alive = self.options.keep_alive
            for r in self.ready:
                if r.in_flight == 0 and last - r.idle_since < keep_alive:
                    due = _earliest(due, r.idle_since + keep_alive)
            if self.options.scaling_delay and self.runners:
                i = self._first_younger_than_delay(last)
                if i < len(self.queue):
                    due = _earliest(due, self.queue[i] + self.options.scaling_delay)
        tick = self.tick
        if self.reference:
            busy = (
                due is not None
                or self.events
                or self.next_arrival < len(self.arrivals)
                or self.qhead < len(self.queue)
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
