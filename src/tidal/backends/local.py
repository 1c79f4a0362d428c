"""The local backend: each runner is a child process running `tidal.runtime`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from tidal import netns
from tidal.backends.base import Address, Runner, RunnerLaunch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBackend:
    name = "local"
    own_placement = False

    def __init__(
        self, runners_dir: Path, isolate: bool = True, env: Mapping[str, str] | None = None
    ) -> None:
        self._isolate = isolate
        self._env = dict(env or {})  # for every runner: the file store and the platform's URL
        # One pid file per live runner, so a restarted platform can stop what a crashed one left.
        self._runners_dir = runners_dir
        self._procs: dict[str, asyncio.subprocess.Process] = {}

    def reap_orphans(self) -> int:
        """Kill runner process groups recorded by an earlier platform process."""
        reaped = 0
        for pid_file in self._runners_dir.glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pgid = int(pid_file.read_text())
                try:
                    cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes()
                except FileNotFoundError:
                    cmdline = b"tidal.runtime"  # leader gone; its group may live on
                if b"tidal.runtime" in cmdline:
                    _killpg(pgid, signal.SIGKILL)
                    reaped += 1
            pid_file.unlink(missing_ok=True)
        return reaped

    def can_share_port(self) -> bool:
        return self._isolate and netns.can_isolate()

    async def start(self, runner: Runner, launch: RunnerLaunch) -> None:
        options = launch.spec.options
        isolate = launch.isolate_network and options.exposed_port is not None
        port = options.exposed_port or free_port()
        cmd = [
            str(launch.python or sys.executable),
            "-m",
            "tidal.runtime",
            "--bundle",
            str(launch.bundle_dir),
            "--entry",
            launch.spec.entry,
            "--port",
            str(port),
        ]
        if isolate:
            cmd.append("--isolate-network")
        if launch.data_dir is not None:
            launch.data_dir.mkdir(parents=True, exist_ok=True)
            cmd += ["--data-dir", str(launch.data_dir)]
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ, **self._env, **launch.env,
            "PYTHONUNBUFFERED": "1",
            "TIDAL_PLATFORM_PID": str(os.getpid()),
        }  # fmt: skip
        with launch.log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=launch.bundle_dir,
                env=env,
                start_new_session=True,  # its own process group: stop() reaches the user's server too
            )
        self._procs[launch.runner_id] = proc
        self._runners_dir.mkdir(parents=True, exist_ok=True)
        (self._runners_dir / f"{launch.runner_id}.pid").write_text(str(proc.pid))
        runner.pid = proc.pid
        runner.address = Address("127.0.0.1", port, proc.pid if isolate else None)

    async def wait_exit(self, runner: Runner) -> int:
        proc = self._procs[runner.id]
        code = await proc.wait()
        # The user's server may outlive the runtime: nothing of the group survives it.
        _killpg(proc.pid, signal.SIGKILL)
        self._procs.pop(runner.id, None)
        (self._runners_dir / f"{runner.id}.pid").unlink(missing_ok=True)
        return code

    def exited(self, runner: Runner) -> bool:
        proc = self._procs.get(runner.id)
        return proc is None or proc.returncode is not None

    async def stop(self, runner: Runner, grace: float) -> None:
        proc = self._procs.get(runner.id)
        if proc is None or proc.returncode is not None:
            return
        _killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            pass
        finally:
            # After the grace period, or if the platform stops waiting (shutdown),
            # nothing of the runner's process group survives.
            _killpg(proc.pid, signal.SIGKILL)

    def kill_all(self) -> None:
        for runner_id, proc in list(self._procs.items()):
            _killpg(proc.pid, signal.SIGKILL)
            (self._runners_dir / f"{runner_id}.pid").unlink(missing_ok=True)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
