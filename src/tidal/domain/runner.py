"""A runner and its lifecycle, as data: the states (fal's names), the moves
allowed between them, and the one `transition()` that makes a move.

    FAILURE_DELAY ─→ PENDING ─→ DOCKER_PULL ─→ SETUP ─→ IDLE ⇄ RUNNING
                        │            │           │        │       │
                        │            └───────────┴──→ DRAINING ←──┘
                        │                        │        │
                        │                        └──→ TERMINATING ─→ TERMINATED | FAILED
                        └─→ TERMINATED | FAILED (never launched)

A move not in `MOVES` is a bug in the caller and raises `IllegalTransition`.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from pathlib import Path


class RunnerState(enum.StrEnum):
    # Before it starts a new runner after failed starts, the app waits out its backoff here.
    FAILURE_DELAY = "failure_delay"
    PENDING = "pending"  # wanted, waiting for capacity (CPUs, memory, GPUs); `reason` says what
    DOCKER_PULL = "docker_pull"  # the backend is fetching the runner's image
    SETUP = "setup"  # process launched (the App's setup() runs), server not answering yet
    IDLE = "idle"  # answering, no request in flight; keep_alive counts from here
    RUNNING = "running"  # serving at least one request
    DRAINING = "draining"  # takes no new requests; stops when in-flight work is done
    TERMINATING = "terminating"  # asked to stop (SIGTERM, teardown()), not exited yet
    TERMINATED = "terminated"  # stopped on purpose (idle, deleted, replaced, yielded)
    FAILED = "failed"  # died or never became ready; `reason` says why (tidal's own state)


S = RunnerState
MOVES: dict[RunnerState, frozenset[RunnerState]] = {
    S.FAILURE_DELAY: frozenset({S.PENDING, S.TERMINATED}),
    S.PENDING: frozenset({S.DOCKER_PULL, S.SETUP, S.TERMINATED, S.FAILED}),
    S.DOCKER_PULL: frozenset({S.SETUP, S.TERMINATING, S.FAILED}),
    S.SETUP: frozenset({S.IDLE, S.TERMINATING, S.FAILED}),
    S.IDLE: frozenset({S.RUNNING, S.DRAINING, S.TERMINATING, S.FAILED}),
    S.RUNNING: frozenset({S.IDLE, S.DRAINING, S.TERMINATING, S.FAILED}),
    S.DRAINING: frozenset({S.TERMINATING, S.FAILED}),
    S.TERMINATING: frozenset({S.TERMINATED, S.FAILED}),
    S.TERMINATED: frozenset(),
    S.FAILED: frozenset(),
}

ENDED = frozenset({S.TERMINATED, S.FAILED})
LIVE_STATES = frozenset(MOVES) - ENDED
# Launched, not serving yet: what a cold start waits on.
STARTING = frozenset({S.DOCKER_PULL, S.SETUP})
# Answering requests: the router hands these slots.
SERVING = frozenset({S.IDLE, S.RUNNING})
# Counted toward the app's runners by the scaling policy (starting ones as not ready).
WANTED = frozenset({S.FAILURE_DELAY, S.PENDING}) | STARTING | SERVING

# The coarse summary an app's page, the analytics series and /metrics count by.
RUNNER_PHASES: dict[RunnerState, str] = {
    S.FAILURE_DELAY: "pending",
    S.PENDING: "pending",
    S.DOCKER_PULL: "starting",
    S.SETUP: "starting",
    S.IDLE: "ready",
    S.RUNNING: "ready",
    S.DRAINING: "draining",
    S.TERMINATING: "draining",
}
RUNNER_PHASE_NAMES = ("pending", "starting", "ready", "draining")


class IllegalTransition(RuntimeError):
    """A move the lifecycle does not allow: a bug in the code that asked for it."""


@dataclass(frozen=True)
class Address:
    """How the gateway reaches a runner's server. `netns_pid` set: inside that
    process's private network namespace, so connect from there."""

    host: str
    port: int
    netns_pid: int | None = None


@dataclass
class Runner:
    id: str
    app: str
    revision: int
    backend: str
    log_path: Path
    address: Address | None = None
    state: RunnerState = RunnerState.PENDING
    reason: str = ""
    machine_type: str = ""
    gpu_ids: tuple[str, ...] = ()
    pid: int | None = None
    created_at: float = field(default_factory=time.time)
    # When it left PENDING (capacity found, process launching): splits a cold start.
    starting_at: float | None = None
    ready_at: float | None = None
    ended_at: float | None = None
    in_flight: int = 0
    # Open WebSockets and event streams not holding a request slot (long_lived="separate").
    long_lived: int = 0
    # A connection to it failed; takes no requests until a probe says it still answers.
    suspect: bool = False
    served: int = 0
    # How its process began: from a runner template, or fresh (and why).
    started_from: str = ""
    # How the platform learned it answers: the runner's own word ("listening signal"),
    # or an HTTP probe on a timer ("probe").
    ready_from: str = ""
    # Monotonic time of the last request's end (or of ready): what keep_alive counts from.
    idle_since: float = field(default_factory=time.monotonic)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def can_move(self, to: RunnerState) -> bool:
        return to in MOVES[self.state]

    def transition(
        self, to: RunnerState, reason: str | None = None, at: float | None = None
    ) -> None:
        """Move to `to` (wall-clock time `at`, default now), recording the timestamps
        that belong to the move; `reason` replaces the shown reason when given."""
        if to not in MOVES[self.state]:
            raise IllegalTransition(
                f"runner {self.id}: {self.state.value} -> {to.value} is not a move"
            )
        when = time.time() if at is None else at
        if to in STARTING and self.starting_at is None:
            self.starting_at = when
        elif to is S.IDLE and self.ready_at is None:
            self.ready_at = when
        elif to in ENDED:
            self.ended_at = when
        self.state = to
        if reason is not None:
            self.reason = reason
