"""The local backend: each runner is a child process running `tidal.runtime`, inside
its app's sandbox (tidal.sandbox) unless the platform runs with `--sandbox off`."""

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
from tidal.sandbox import Limits, Sandbox, SandboxedProcess, out_of_memory_reason
from tidal.sandbox.environment import runner_environment
from tidal.storage.files import FILES_DIR_ENV


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBackend:
    name = "local"
    own_placement = False

    def __init__(
        self,
        runners_dir: Path,
        isolate: bool = True,
        env: Mapping[str, str] | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self._isolate = isolate
        self._env = dict(env or {})  # for every runner: the file store and the platform's URL
        # One pid file per live runner, so a restarted platform can stop what a crashed one left.
        self._runners_dir = runners_dir
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        # None: `--sandbox off`, runners run unconfined with the platform's own rights.
        self.sandbox = sandbox
        self._sandboxed: dict[str, SandboxedProcess] = {}
        self._limits: dict[str, tuple[str, Limits]] = {}
        self._oom: dict[str, str] = {}

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
        if self.sandbox is not None:
            reaped = max(reaped, self.sandbox.reap_orphans())
        return reaped

    def can_share_port(self) -> bool:
        if self.sandbox is not None:
            return True  # every sandboxed runner has its own network namespace
        return self._isolate and netns.can_isolate()

    def _command(self, launch: RunnerLaunch, port: int, sandboxed: bool) -> list[str]:
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
        if sandboxed:
            return cmd  # the sandbox gives it its network and /data
        if launch.isolate_network and launch.spec.options.exposed_port is not None:
            cmd.append("--isolate-network")
        if launch.data_dir is not None:
            launch.data_dir.mkdir(parents=True, exist_ok=True)
            cmd += ["--data-dir", str(launch.data_dir)]
        return cmd

    async def start(self, runner: Runner, launch: RunnerLaunch) -> None:
        options = launch.spec.options
        port = options.exposed_port or free_port()
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        runner_vars = {**self._env, **launch.env}
        if self.sandbox is not None:
            await self._start_sandboxed(runner, launch, port, runner_vars)
            return
        isolate = launch.isolate_network and options.exposed_port is not None
        env = runner_environment(
            os.environ,
            {**runner_vars, "TIDAL_PLATFORM_PID": str(os.getpid())},
            home=os.environ.get("HOME", "/tmp"),
        )
        with launch.log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *self._command(launch, port, sandboxed=False),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=launch.bundle_dir,
                env=env,
                start_new_session=True,  # its own process group: stop() reaches the user's server too
            )
        self._track(runner, launch, proc)
        runner.address = Address("127.0.0.1", port, proc.pid if isolate else None)

    async def _start_sandboxed(
        self, runner: Runner, launch: RunnerLaunch, port: int, runner_vars: dict[str, str]
    ) -> None:
        assert self.sandbox is not None
        read_only = [Path(p) for p in runner_vars.get("PYTHONPATH", "").split(os.pathsep) if p]
        if runner_vars.get("VIRTUAL_ENV"):
            read_only.append(Path(runner_vars["VIRTUAL_ENV"]))
        request_log = runner_vars.get("TIDAL_REQUEST_LOG")
        files = runner_vars.get(FILES_DIR_ENV)
        limits = Limits(
            cpus=launch.cpus or 1.0,
            memory_mb=launch.memory_mb or 1024,
            pids=self.sandbox.settings.pids_max,
        )
        prepared = self.sandbox.prepare(
            app=f"{launch.owner}/{launch.spec.name}",
            runner_id=launch.runner_id,
            bundle_dir=launch.bundle_dir,
            python=launch.python or Path(sys.executable),
            runner_vars=runner_vars,
            limits=limits,
            egress=launch.spec.options.egress,
            data_dir=launch.data_dir,
            files_dir=Path(files) if files else None,
            writable_files=[Path(request_log)] if request_log else [],
            read_only=read_only,
            gpu_ids=launch.gpu_ids,
        )
        with launch.log_path.open("ab") as log:
            sandboxed = await self.sandbox.spawn(
                prepared, self._command(launch, port, sandboxed=True), log
            )
        self._sandboxed[launch.runner_id] = sandboxed
        self._limits[launch.runner_id] = (launch.machine_type, limits)
        self._track(runner, launch, sandboxed.process)
        runner.address = Address("127.0.0.1", port, sandboxed.init_pid)

    def _track(
        self, runner: Runner, launch: RunnerLaunch, proc: asyncio.subprocess.Process
    ) -> None:
        self._procs[launch.runner_id] = proc
        self._runners_dir.mkdir(parents=True, exist_ok=True)
        (self._runners_dir / f"{launch.runner_id}.pid").write_text(str(proc.pid))
        runner.pid = proc.pid

    async def wait_exit(self, runner: Runner) -> int:
        proc = self._procs[runner.id]
        code = await proc.wait()
        # The user's server may outlive the runtime: nothing of the group survives it.
        _killpg(proc.pid, signal.SIGKILL)
        sandboxed = self._sandboxed.pop(runner.id, None)
        if sandboxed is not None and self.sandbox is not None:
            if sandboxed.prepared.cgroup.oom_kills():
                self._oom[runner.id] = self._oom_reason(runner.id)
            self._limits.pop(runner.id, None)
            await asyncio.get_running_loop().run_in_executor(None, self.sandbox.release, sandboxed)
        self._procs.pop(runner.id, None)
        (self._runners_dir / f"{runner.id}.pid").unlink(missing_ok=True)
        return code

    def exit_reason(self, runner: Runner) -> str | None:
        """Why the runner ended, when the sandbox knows better than its exit status."""
        sandboxed = self._sandboxed.get(runner.id)
        if sandboxed is not None and sandboxed.prepared.cgroup.oom_kills():
            return self._oom_reason(runner.id)
        return self._oom.pop(runner.id, None)

    def _oom_reason(self, runner_id: str) -> str:
        machine_type, limits = self._limits[runner_id]
        return out_of_memory_reason(machine_type, limits.memory_mb)

    def runner_ready(self, runner: Runner) -> None:
        """It answers: from now on it gets its machine type's CPU share, no more."""
        sandboxed = self._sandboxed.get(runner.id)
        if sandboxed is not None:
            with contextlib.suppress(OSError):  # it may have just exited
                sandboxed.prepared.cgroup.set_cpus(self._limits[runner.id][1])

    def exited(self, runner: Runner) -> bool:
        proc = self._procs.get(runner.id)
        return proc is None or proc.returncode is not None

    async def stop(self, runner: Runner, grace: float) -> None:
        proc = self._procs.get(runner.id)
        if proc is None or proc.returncode is not None:
            return
        sandboxed = self._sandboxed.get(runner.id)
        if sandboxed is not None and self.sandbox is not None:
            # Not the group: bubblewrap itself would end the sandbox at once on SIGTERM.
            self.sandbox.terminate(sandboxed)
        else:
            _killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            pass
        finally:
            # After the grace period, or if the platform stops waiting (shutdown),
            # nothing of the runner's process group survives.
            if sandboxed is not None and self.sandbox is not None:
                self.sandbox.kill(sandboxed)
            _killpg(proc.pid, signal.SIGKILL)

    def kill_all(self) -> None:
        for runner_id, proc in list(self._procs.items()):
            _killpg(proc.pid, signal.SIGKILL)
            (self._runners_dir / f"{runner_id}.pid").unlink(missing_ok=True)
        if self.sandbox is not None:
            self.sandbox.close(list(self._sandboxed.values()))


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
