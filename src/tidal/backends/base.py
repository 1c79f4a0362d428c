"""The backend protocol and the runner record every part of the platform shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tidal.domain.runner import LIVE_STATES, Address, Runner, RunnerState
from tidal.spec import AppSpec

__all__ = [
    "LIVE_STATES",
    "Address",
    "Backend",
    "BackendUnavailable",
    "Runner",
    "RunnerLaunch",
    "RunnerState",
]


class BackendUnavailable(Exception):
    """A backend can't run runners here; the message says why and how to fix it."""


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
    owner: str = ""  # with the app's name: whose sandbox uid the runner gets
    # How many runner templates to keep waiting for runners like it (tidal.templates;
    # 0: it starts fresh), where the backend has them.
    templates: int = 1


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
