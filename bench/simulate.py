"""How long `tidal scale simulate` takes to replay 100k requests through the live
controller and router, against a bare discrete-event loop over the same trace in the
same run.

The trace: Poisson arrivals at ~10 requests/s of ~0.5 s each (about 5 runners busy),
the SDK's default options, a 5 s cold start. The baseline pushes and pops each
request's arrival and end through a heap and does nothing else: the least any
event-by-event replay costs in Python. Best of N runs, wall and CPU time (CPU is less
sensitive to a loaded machine).

    .venv/bin/python bench/simulate.py [--requests N] [--trials N]
"""

from __future__ import annotations

import argparse
import heapq
import random
import time
from collections.abc import Callable

from tidal.scaling.simulate import Trace, simulate
from tidal.spec import AppOptions


def make_trace(n: int) -> Trace:
    rng = random.Random(42)
    t, requests = 0.0, []
    for _ in range(n):
        t += rng.expovariate(10.0)
        requests.append((t, rng.expovariate(2.0)))
    return Trace.of(requests)


def bare_loop(trace: Trace) -> None:
    """Each request's arrival and end through one heap, in time order."""
    events: list[tuple[float, int]] = []
    for i, (arrival, duration) in enumerate(zip(trace.arrivals, trace.durations, strict=True)):
        heapq.heappush(events, (arrival, i))
        heapq.heappush(events, (arrival + duration, i))
    while events:
        heapq.heappop(events)


def best(run: Callable[[], object], trials: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(trials):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    trace = make_trace(args.requests)
    result = simulate(trace, AppOptions())
    assert result.served == args.requests, result
    base_wall, base_cpu = best(lambda: bare_loop(trace), args.trials)
    wall, cpu = best(lambda: simulate(trace, AppOptions()), args.trials)
    print(f"{args.requests:,} requests, best of {args.trials}; "
          f"{result.policy_calls:,} reconciles, {result.cold_starts} runners started")  # fmt: skip
    print(f"{'':<26}{'wall s':>9}{'cpu s':>9}{'us/request':>12}{'x baseline (cpu)':>18}")
    rows = (("bare event loop", base_wall, base_cpu), ("tidal scale simulate", wall, cpu))
    for name, w, c in rows:
        per = c / args.requests * 1e6
        print(f"{name:<26}{w:>9.2f}{c:>9.2f}{per:>12.1f}{c / base_cpu:>18.1f}")


if __name__ == "__main__":
    main()
