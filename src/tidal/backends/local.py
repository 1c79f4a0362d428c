"""The local backend: each runner is a child process running `tidal.runtime`, inside
its app's sandbox (tidal.sandbox) unless the platform runs with `--sandbox off`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

from tidal import netns
from tidal.backends.base import Address, Runner, RunnerLaunch
from tidal.backends.runner_line import RunnerLine
from tidal.domain.runner import LIVE_STATES, STARTING, RunnerState
from tidal.runtime import channel
from tidal.sandbox import Limits, Sandbox, SandboxedProcess, out_of_memory_reason
from tidal.sandbox.environment import runner_environment
from tidal.sandbox.launch import Prepared, SandboxRequest
from tidal.storage.files import FILES_DIR_ENV
from tidal.templates import TemplatePool, sandboxed_template_key, template_env, template_key
from tidal.templates.pool import Spawn

# The next template waits this long at most for the runner before it to answer.
STARTUP_HEAD_START_S = 30.0
WAITING_TO_ANSWER = STARTING | {RunnerState.PENDING}
T = TypeVar("T")


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
        templates: bool = True,
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
        self._lines: dict[str, RunnerLine] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        # Runner templates (tidal.templates); a sandboxed one is the next runner's sandbox.
        self.templates = TemplatePool(
            self._spawn, runners_dir, enabled=templates, on_discard=self._discard_template
        )
        self._template_sandboxes: dict[int, tuple[SandboxedProcess, Path]] = {}
        self._stopped = False  # kill_all ran: the platform is stopping

    def reap_orphans(self) -> int:
        """Kill runner process groups recorded by an earlier platform process."""
        reaped = 0
        for pid_file in [*self._runners_dir.glob("*.pid"), *self._runners_dir.glob("*/*.pid")]:
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

    def _command(self, launch: RunnerLaunch, port: int | None, sandboxed: bool) -> list[str]:
        """The runtime's command; without --port for a template (its claim gives one)."""
        cmd = [
            str(launch.python or sys.executable),
            "-m",
            "tidal.runtime",
            "--bundle",
            str(launch.bundle_dir),
            "--entry",
            launch.spec.entry,
            *(["--port", str(port)] if port is not None else []),
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
        cmd, env = self._command(launch, None, sandboxed=False), self._environment(runner_vars)
        key = template_key(cmd, str(launch.bundle_dir), env)
        template = await self.templates.claim(key) if launch.templates else None
        if template is not None:
            proc, line = template.process, template.line
            self.templates.hand_over(template, launch.log_path, self._pid_file(launch.runner_id))
            self._send_claim(line, launch, env, port)
            runner.started_from = "template"
        else:

            def fresh(argv: list[str], fd: int) -> Awaitable[asyncio.subprocess.Process]:
                return self._spawn(argv, env, launch.bundle_dir, launch.log_path, fd)

            proc, line = await _start_fresh(fresh, cmd, port)
            runner.started_from = self._fresh_because(launch, key)
        self._track(runner, launch, proc)
        self._keep_line(launch.runner_id, line)
        runner.address = Address("127.0.0.1", port, proc.pid if isolate else None)
        self._next_template(runner, launch, key, cmd, env)

    @staticmethod
    def _send_claim(line: RunnerLine, launch: RunnerLaunch, env: dict[str, str], port: int) -> None:
        with launch.log_path.open("ab") as log:
            line.send({"claim": {"env": env, "port": port, "host": "127.0.0.1"}}, [log.fileno()])

    def _next_template(
        self,
        runner: Runner,
        launch: RunnerLaunch,
        key: str,
        cmd: list[str],
        env: dict[str, str],
        spawn: Spawn | None = None,
    ) -> None:
        """Once `runner` answers, the next cold start of its revision finds one waiting."""
        if not launch.templates:
            return

        def next_template() -> Awaitable[None]:
            return self.templates.ensure(
                key, launch.spec.name, launch.revision, cmd, template_env(env),
                launch.bundle_dir, spawn, launch.templates, launch.owner,
            )  # fmt: skip

        task = asyncio.ensure_future(_once_started(runner, next_template))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _environment(self, runner_vars: dict[str, str]) -> dict[str, str]:
        return runner_environment(
            os.environ,
            {**runner_vars, "TIDAL_PLATFORM_PID": str(os.getpid())},
            home=os.environ.get("HOME", "/tmp"),
        )

    async def prestart(self, launch: RunnerLaunch) -> None:
        """Start a runner template for runners like `launch` (at deploy), unless one waits."""
        if not launch.templates:
            return
        runner_vars = {**self._env, **launch.env}
        if self.sandbox is not None:
            if launch.gpu_ids:
                return  # a template holds no GPU: its devices are bound when it is built
            request, env = self._sandbox_request(launch, runner_vars)
            cmd = self._command(launch, None, sandboxed=True)
            key = sandboxed_template_key(cmd, str(launch.bundle_dir), env, request)
            spawn = self._template_spawn(launch, request, runner_vars)
            await self.templates.ensure(
                key, launch.spec.name, launch.revision, cmd, template_env(env),
                launch.bundle_dir, spawn, launch.templates, launch.owner,
            )  # fmt: skip
            return
        cmd = self._command(launch, None, sandboxed=False)
        env = self._environment(runner_vars)
        key = template_key(cmd, str(launch.bundle_dir), env)
        await self.templates.ensure(
            key, launch.spec.name, launch.revision, cmd, template_env(env), launch.bundle_dir,
            count=launch.templates, owner=launch.owner,
        )  # fmt: skip

    def forget_app(self, owner: str, name: str) -> None:
        """The app is deleted: its runner templates go with it."""
        self.templates.forget(owner, name)

    def _fresh_because(self, launch: RunnerLaunch, key: str) -> str:
        if not self.templates.enabled:
            return "fresh process: runner templates are off on this platform"
        if not launch.templates:
            return "fresh process: runner templates are off for this app"
        if unsafe := self.templates.unsafe(key):
            return f"fresh process: its template was unsafe to use: {unsafe}"
        return "fresh process: no template was waiting"

    async def _spawn(
        self, cmd: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path, fd: int
    ) -> asyncio.subprocess.Process:
        with log_path.open("ab") as log:
            return await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=cwd,
                env=env,
                pass_fds=(fd,),  # its control line (tidal.runtime.channel)
                start_new_session=True,  # its own process group: stop() reaches the user's server too
            )

    def _pid_file(self, runner_id: str) -> Path:
        self._runners_dir.mkdir(parents=True, exist_ok=True)
        return self._runners_dir / f"{runner_id}.pid"

    def listening(self, runner: Runner) -> asyncio.Event | None:
        """Set once the runner says its server listens (None: it has no control line)."""
        line = self._lines.get(runner.id)
        return line.listening if line is not None else None

    def _sandbox_request(
        self, launch: RunnerLaunch, runner_vars: dict[str, str]
    ) -> tuple[SandboxRequest, dict[str, str]]:
        """What the runner's sandbox is built from, and the environment it gets there."""
        assert self.sandbox is not None
        read_only = [Path(p) for p in runner_vars.get("PYTHONPATH", "").split(os.pathsep) if p]
        if runner_vars.get("VIRTUAL_ENV"):
            read_only.append(Path(runner_vars["VIRTUAL_ENV"]))
        files = runner_vars.get(FILES_DIR_ENV)
        request = SandboxRequest(
            app=f"{launch.owner}/{launch.spec.name}",
            python=launch.python or Path(sys.executable),
            limits=Limits(
                cpus=launch.cpus or 1.0,
                memory_mb=launch.memory_mb or 1024,
                pids=self.sandbox.settings.pids_max,
            ),
            egress=launch.spec.options.egress,
            data_dir=launch.data_dir,
            files_dir=Path(files) if files else None,
            read_only=tuple(read_only),
            gpu_ids=tuple(launch.gpu_ids),
        )
        return request, self.sandbox.environment(runner_vars)

    async def _prepare(
        self,
        launch: RunnerLaunch,
        request: SandboxRequest,
        runner_id: str,
        runner_vars: Mapping[str, str],
        request_log: str | None,
    ) -> Prepared:
        """The runner's sandbox prepared in a thread: its uid, folders, files and cgroup
        are file-system work (several ms a runner on a quiet machine, tens under load)
        that would stall every request the loop serves. A start cancelled meanwhile has
        what the thread made removed once it is done."""
        assert self.sandbox is not None
        prepare = partial(
            self.sandbox.prepare,
            app=request.app,
            runner_id=runner_id,
            bundle_dir=launch.bundle_dir,
            python=request.python,
            runner_vars=runner_vars,
            limits=request.limits,
            egress=request.egress,
            data_dir=request.data_dir,
            files_dir=request.files_dir,
            writable_files=[Path(request_log)] if request_log else [],
            read_only=request.read_only,
            gpu_ids=request.gpu_ids,
        )
        work = asyncio.ensure_future(asyncio.to_thread(prepare))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            work.add_done_callback(_remove_prepared)
            raise

    def _template_spawn(
        self, launch: RunnerLaunch, request: SandboxRequest, runner_vars: dict[str, str]
    ) -> Spawn:
        """Starts a template as the next runner's sandbox: its own uid, namespaces,
        cgroup and way out are made now; the runner's id, port and request log come
        with the claim. Its request log is the template's own file, renamed to the
        runner's at claim (the sandbox's bind follows the file)."""

        async def spawn(
            cmd: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path, fd: int
        ) -> asyncio.subprocess.Process:
            assert self.sandbox is not None
            template_id = log_path.stem
            request_log = log_path.with_suffix(".requests.jsonl")
            template_vars = template_env(runner_vars)
            template_vars["TIDAL_RUNNER_ID"] = "template"
            template_vars["TIDAL_REQUEST_LOG"] = str(request_log)
            prepared = await self._prepare(
                launch, request, template_id, template_vars, str(request_log)
            )
            sandboxed = await self._spawn_sandboxed(prepared, cmd, log_path, fd)
            self._template_sandboxes[sandboxed.process.pid] = (sandboxed, request_log)
            return sandboxed.process

        return spawn

    async def _spawn_sandboxed(
        self, prepared: Prepared, cmd: Sequence[str], log_path: Path, fd: int
    ) -> SandboxedProcess:
        assert self.sandbox is not None
        with log_path.open("ab") as log:
            return await self.sandbox.spawn(prepared, cmd, log, pass_fds=(fd,))

    def _discard_template(self, process: asyncio.subprocess.Process) -> None:
        entry = self._template_sandboxes.pop(process.pid, None)
        if entry is None or self.sandbox is None:
            return
        sandboxed, request_log = entry
        request_log.unlink(missing_ok=True)
        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(None, self.sandbox.release, sandboxed)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_sandboxed(
        self, runner: Runner, launch: RunnerLaunch, port: int, runner_vars: dict[str, str]
    ) -> None:
        assert self.sandbox is not None
        request, env = self._sandbox_request(launch, runner_vars)
        cmd = self._command(launch, None, sandboxed=True)
        key = sandboxed_template_key(cmd, str(launch.bundle_dir), env, request)
        request_log = runner_vars.get("TIDAL_REQUEST_LOG")
        template = None
        if launch.templates and not launch.gpu_ids:
            template = await self.templates.claim(key)
        entry = self._template_sandboxes.pop(template.process.pid, None) if template else None
        if template is not None and entry is None:
            # Not one of this backend's sandboxes (it cannot become this runner): end it,
            # its process and its line, rather than leave both behind.
            self.templates.discard(template)
            template = None
        if template is not None and entry is not None:
            sandboxed, template_log = entry
            if request_log:  # the runner's request log is the file its sandbox writes
                os.replace(template_log, request_log)
                env["TIDAL_REQUEST_LOG"] = str(template_log)
            self.templates.hand_over(template, launch.log_path, self._pid_file(launch.runner_id))
            self._send_claim(template.line, launch, env, port)
            line = template.line
            runner.started_from = "template"
        else:
            prepared = await self._prepare(
                launch, request, launch.runner_id, runner_vars, request_log
            )

            def fresh(argv: list[str], fd: int) -> Awaitable[SandboxedProcess]:
                return self._spawn_sandboxed(prepared, argv, launch.log_path, fd)

            sandboxed, line = await _start_fresh(fresh, cmd, port)
            runner.started_from = (
                "fresh process: runner templates do not hold GPUs"
                if launch.gpu_ids and launch.templates
                else self._fresh_because(launch, key)
            )
        self._sandboxed[launch.runner_id] = sandboxed
        self._limits[launch.runner_id] = (launch.machine_type, request.limits)
        self._keep_line(launch.runner_id, line)
        self._track(runner, launch, sandboxed.process)
        runner.address = Address("127.0.0.1", port, sandboxed.init_pid)
        if not launch.gpu_ids:
            spawn = self._template_spawn(launch, request, runner_vars)
            self._next_template(runner, launch, key, cmd, env, spawn)

    def _track(
        self, runner: Runner, launch: RunnerLaunch, proc: asyncio.subprocess.Process
    ) -> None:
        self._procs[launch.runner_id] = proc
        self._pid_file(launch.runner_id).write_text(str(proc.pid))
        runner.pid = proc.pid

    async def wait_exit(self, runner: Runner) -> int:
        proc = self._procs[runner.id]
        code = await proc.wait()
        line = self._lines.pop(runner.id, None)
        if line is not None:
            line.close()
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

    def _keep_line(self, runner_id: str, line: RunnerLine) -> None:
        if self._stopped:  # started while the platform stopped: wait_exit will not run
            line.close()
        else:
            self._lines[runner_id] = line

    def kill_all(self) -> None:
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        self.templates.kill_all()
        waiting = [sandboxed for sandboxed, _ in self._template_sandboxes.values()]
        self._template_sandboxes.clear()
        for runner_id, proc in list(self._procs.items()):
            _killpg(proc.pid, signal.SIGKILL)
            (self._runners_dir / f"{runner_id}.pid").unlink(missing_ok=True)
        for line in self._lines.values():  # wait_exit may never run now
            line.close()
        self._lines.clear()
        if self.sandbox is not None:
            self.sandbox.close([*self._sandboxed.values(), *waiting])


async def _start_fresh(
    spawn: Callable[[list[str], int], Awaitable[T]], cmd: list[str], port: int
) -> tuple[T, RunnerLine]:
    """A fresh runner started by `spawn(argv, control_fd)`, and the platform's end of
    its control line (the runner's end is closed here once it has it, or on failure)."""
    platform_end, runner_end = channel.pair()
    fd = runner_end.fileno()
    try:
        started = await spawn([*cmd, "--port", str(port), "--control-fd", str(fd)], fd)
    except BaseException:
        platform_end.close()
        raise
    finally:
        runner_end.close()
    return started, RunnerLine(platform_end)


async def _once_started(runner: Runner, then: Callable[[], Awaitable[None]]) -> None:
    """Run `then` once the runner answers (or is still starting after a while): a
    template importing meanwhile would take the CPUs this runner's own start needs.
    A runner stopped before it answered (its app deleted, the platform stopping) or
    whose start failed gets no successor."""
    deadline = time.monotonic() + STARTUP_HEAD_START_S
    while runner.state in WAITING_TO_ANSWER and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if runner.state in LIVE_STATES - {RunnerState.TERMINATING}:
        await then()


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _remove_prepared(work: asyncio.Future[Prepared]) -> None:
    """A sandbox prepared for a start that was cancelled meanwhile: its cgroup goes."""
    if not work.cancelled() and work.exception() is None:
        work.result().cgroup.remove()
