"""The scaling decision as a pure function of (options, load, runners).

No clock and no I/O: callers pass ages in seconds, so the live controller and
tests (and a simulator) run exactly the same arithmetic.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from tidal.spec import ScalingOptions


# Named tuples, not frozen dataclasses: the controller builds them on every reconcile
# (the simulator: once per request), and a tuple is several times cheaper to make.
class RunnerView(NamedTuple):
    id: str
    ready: bool  # False: still starting (counts toward desired, takes no work yet)
    in_flight: int
    idle_for: float  # seconds since its last request ended (or since ready)


class Load(NamedTuple):
    executing: int  # requests running on runners
    waits: tuple[float, ...] = ()  # how long each waiting request has waited, seconds


class Decision(NamedTuple):
    desired: int
    start: int
    stop: tuple[str, ...]


def decide(
    options: ScalingOptions,
    *,
    max_multiplexing: int,
    ceiling: int,
    load: Load,
    runners: tuple[RunnerView, ...],
) -> Decision:
    """How many runners to start and which idle ones to stop.

    `ceiling` is the effective max_concurrency (the app's, or the platform's
    default, capped further when the host cannot run more than one).
    """
    # scaling_delay: a waiting request asks for capacity only after waiting that
    # long, except when nothing runs at all (scale from zero never waits).
    if not load.waits:
        waiting = 0
    elif runners:
        waiting = sum(1 for age in load.waits if age >= options.scaling_delay)
    else:
        waiting = len(load.waits)
    needed = math.ceil((load.executing + waiting) / max_multiplexing)
    buffer = max(
        options.concurrency_buffer,
        math.ceil(options.concurrency_buffer_perc * needed / 100),
    )
    top = min(ceiling, options.max_concurrency or ceiling)
    desired = max(options.min_concurrency, min(needed + buffer, top))
    desired = min(desired, top)

    if desired > len(runners):
        return Decision(desired, desired - len(runners), ())
    surplus = len(runners) - desired
    if not surplus:
        return Decision(desired, 0, ())
    idle = sorted(
        (r for r in runners if r.ready and r.in_flight == 0 and r.idle_for >= options.keep_alive),
        key=lambda r: r.idle_for,
        reverse=True,  # the longest idle goes first
    )
    return Decision(desired, 0, tuple(r.id for r in idle[:surplus]))
