"""The backend protocol and the runner record every part of the platform shares."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tidal.spec import AppSpec


class RunnerState(enum.StrEnum):
    PENDING = "pending"  # wanted, waiting for capacity (CPUs, memory, GPUs); `reason` says what
    STARTING = "starting"  # process launched, server not answering yet
    READY = "ready"  # answering; takes requests
    DRAINING = "draining"  # takes no new requests; stops when in-flight work is done
    GONE = "gone"  # stopped on purpose (idle, deleted, replaced)
    FAILED = "failed"  # died or never became ready; `reason` says why


LIVE_STATES = frozenset(
    {RunnerState.PENDING, RunnerState.STARTING, RunnerState.READY, RunnerState.DRAINING}
)


class BackendUnavailable(Exception):
    """A backend can't run runners here; the message says why and how to fix it."""


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
    # Monotonic time of the last request's end (or of ready): what keep_alive counts from.
    idle_since: float = field(default_factory=time.monotonic)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


@dataclass(frozen=True)
class RunnerLaunch:
    """What a backend needs to start one runner."""

    runner_id: str
    spec: AppSpec
    revision: int
    bundle_dir: Path
    log_path: Path
    env: dict[str, str]
    isolate_network: bool
    data_dir: Path | None = None  # persistent storage, mounted at /data where possible
    python: Path | None = None  # the environment's interpreter (default: the platform's)
    # What placement gave it (tidal.scaling.placement), or, for a backend that places
    # runners itself, what it asked for: the first machine type that fits there wins.
    machine_types: tuple[str, ...] = ()
    machine_type: str = ""
    cpus: float = 0.0
    memory_mb: int = 0
    gpu_ids: tuple[str, ...] = ()
    num_gpus: int = 0


class Backend(Protocol):
    name: str
    # True: the backend's own scheduler decides where a runner fits (a cluster); the
    # host inventory is not consulted, and start() may wait for capacity (runner PENDING).
    own_placement: bool

    def reap_orphans(self) -> int:
        """Stop runners an earlier platform process left behind (and only those)."""
        ...

    async def start(self, runner: Runner, launch: RunnerLaunch) -> None:
        """Launch the runner: set its address (and pid, where there is one); readiness
        is probed by the caller. With `own_placement`, the runner is still PENDING while
        the cluster finds room (set `runner.reason` to say why it waits, and give up if
        the runner stops being PENDING: it is no longer wanted)."""
        ...

    async def wait_exit(self, runner: Runner) -> int:
        """Return the runner's exit status once it has exited."""
        ...

    async def stop(self, runner: Runner, grace: float) -> None:
        """Ask the runner to finish (SIGTERM), then kill it after `grace` seconds."""
        ...

    def exited(self, runner: Runner) -> bool: ...

    def kill_all(self) -> None:
        """Kill every runner at once (the platform is stopping and will not wait)."""
        ...

    def can_share_port(self) -> bool:
        """Whether two runners with the same exposed_port can run side by side here."""
        ...
