"""The loop that acts on the policy: one task per deployed app, woken by events
(a request waits, a slot frees, a runner becomes ready or dies) and a slow tick."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidal.backends.base import Backend, Runner, RunnerLaunch, RunnerState
from tidal.config import PlatformConfig
from tidal.control.registry import AppRecord
from tidal.gateway.router import AppRouter, RouterError
from tidal.gateway.upstream import answers_http
from tidal.observe.logs import runner_log_path, tail
from tidal.scaling.policy import Load, RunnerView, decide

log = logging.getLogger("tidal.scaling")

MAX_BACKOFF_SECONDS = 60.0


@dataclass
class Deployment:
    record: AppRecord
    router: AppRouter
    runners: dict[str, Runner] = field(default_factory=dict)
    ended: deque[Runner] = field(default_factory=deque)
    pending_starts: int = 0
    failures: int = 0
    next_start_at: float = 0.0  # monotonic; backoff after failed starts
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    stopping: set[str] = field(default_factory=set)

    @property
    def key(self) -> tuple[str, str]:
        return (self.record.owner, self.record.name)


class Controller:
    def __init__(self, config: PlatformConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend
        self.deployments: dict[tuple[str, str], Deployment] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Called with each runner that ends (the gateway drops its connections).
        self.on_runner_ended: list[Callable[[Runner], None]] = []

    # -- what the control plane calls --------------------------------------
    def apply(self, record: AppRecord) -> Deployment:
        """Create or update the app's deployment after a deploy or a scale change."""
        dep = self.deployments.get((record.owner, record.name))
        if dep is None:
            wake = asyncio.Event()
            router = AppRouter(
                record.options.max_multiplexing, self.config.max_waiting_per_app, wake.set
            )
            dep = Deployment(
                record, router, wake=wake, ended=deque(maxlen=self.config.ended_runners_kept)
            )
            self.deployments[dep.key] = dep
            dep.task = asyncio.create_task(self._loop(dep), name=f"scale {record.name}")
        else:
            if record.revision != dep.record.revision:
                dep.failures, dep.next_start_at = 0, 0.0
            dep.record = record
            dep.router.max_multiplexing = record.options.max_multiplexing
        dep.wake.set()
        return dep

    async def remove(self, owner: str, name: str) -> None:
        dep = self.deployments.pop((owner, name), None)
        if dep is None:
            return
        if dep.task:
            dep.task.cancel()
        dep.router.fail_waiters(RouterError(404, "app_deleted", f"app {name!r} was deleted"))
        await asyncio.gather(
            *(
                self._stop(dep, r, RunnerState.GONE, "app deleted")
                for r in list(dep.runners.values())
            )
        )

    async def shutdown(self) -> None:
        """Stop every runner gracefully (in parallel), then kill whatever is left."""
        await asyncio.gather(*(self.remove(owner, name) for owner, name in list(self.deployments)))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.backend.kill_all()

    def ceiling(self, dep: Deployment) -> int:
        options = dep.record.options
        top = options.max_concurrency or self.config.default_max_concurrency
        if options.exposed_port is not None and not self.backend.can_share_port():
            return 1
        return top

    def port_note(self, dep: Deployment) -> str:
        if dep.record.options.exposed_port is None:
            return ""
        if self.backend.can_share_port():
            return "each runner has a private network namespace; no outbound network"
        return (
            "runners share the host's network here (isolation is off, or needs root on Linux), so this "
            "exposed_port app runs at most one runner here"
        )

    async def stop_runner(self, runner_id: str) -> Runner | None:
        for dep in self.deployments.values():
            runner = dep.runners.get(runner_id)
            if runner is not None:
                await self._stop(dep, runner, RunnerState.GONE, "stopped by request")
                return runner
        return None

    def suspect(self, dep: Deployment, runner: Runner) -> None:
        """A connection to the runner failed: route around it until a probe tells
        whether it still answers (then back in rotation) or not (then replaced)."""
        if runner.suspect or runner.id not in dep.runners:
            return
        runner.suspect = True
        dep.wake.set()
        self._spawn(self._check_suspect(dep, runner))

    async def _check_suspect(self, dep: Deployment, runner: Runner) -> None:
        if runner.address and await answers_http(runner.address, timeout=1.0):
            runner.suspect = False
            dep.router.dispatch()
            return
        await self._stop(dep, runner, RunnerState.FAILED,
                         "the server stopped answering while serving a request")  # fmt: skip

    # -- the loop ------------------------------------------------------------
    async def _loop(self, dep: Deployment) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(dep.wake.wait(), self.config.tick_seconds)
            dep.wake.clear()
            try:
                self._reconcile(dep)
            except Exception:  # a bug here must not stop scaling for good
                log.exception("scaling %s failed", dep.record.name)

    def _reconcile(self, dep: Deployment) -> None:
        now = time.monotonic()
        current = dep.record.revision
        options = dep.record.options
        # Runners of an older revision take no new work and stop once idle.
        for r in list(dep.runners.values()):
            if r.revision != current and r.id not in dep.stopping:
                if r.state is RunnerState.READY:
                    r.state = RunnerState.DRAINING
                if r.in_flight == 0 and r.state is not RunnerState.STARTING:
                    self._spawn(
                        self._stop(dep, r, RunnerState.GONE, f"replaced by revision {current}")
                    )
        views = [
            RunnerView(r.id, r.state is RunnerState.READY, r.in_flight, now - r.idle_since)
            for r in dep.runners.values()
            if r.revision == current
            and r.id not in dep.stopping
            and not r.suspect
            and r.state in (RunnerState.STARTING, RunnerState.READY)
        ]
        views += [RunnerView(f"pending-{i}", False, 0, 0.0) for i in range(dep.pending_starts)]
        decision = decide(
            options,
            max_multiplexing=options.max_multiplexing,
            ceiling=self.ceiling(dep),
            load=Load(dep.router.executing, dep.router.waits(now)),
            runners=tuple(views),
        )
        if decision.start:
            if now < dep.next_start_at:
                # Backing off after failed starts; look again when it ends.
                asyncio.get_running_loop().call_later(dep.next_start_at - now, dep.wake.set)
            else:
                for _ in range(decision.start):
                    dep.pending_starts += 1
                    self._spawn(self._launch(dep))
        for runner_id in decision.stop:
            runner = dep.runners[runner_id]
            self._spawn(
                self._stop(
                    dep, runner, RunnerState.GONE, f"idle for keep_alive ({options.keep_alive}s)"
                )
            )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one runner's life -----------------------------------------------------
    async def _launch(self, dep: Deployment) -> None:
        record = dep.record
        runner_id = "r-" + uuid.uuid4().hex[:10]
        launch = RunnerLaunch(
            runner_id=runner_id,
            spec=record.spec.model_copy(update={"options": record.options}),
            revision=record.revision,
            bundle_dir=self.bundle_dir(record.spec.bundle_digest or ""),
            log_path=runner_log_path(self.config.data_dir, record.owner, record.name, runner_id),
            env={
                "TIDAL_RUNNER_ID": runner_id,
                "TIDAL_APP": record.name,
                "TIDAL_REVISION": str(record.revision),
            },
            isolate_network=self.backend.can_share_port(),
        )
        if record.options.exposed_port is not None and not launch.isolate_network:
            launch.log_path.parent.mkdir(parents=True, exist_ok=True)
            with launch.log_path.open("a") as log_file:
                log_file.write(f"tidal: note: {self.port_note(dep)}\n")
            log.warning("%s: %s", record.name, self.port_note(dep))
        try:
            runner = await self.backend.start(launch)
        except Exception as exc:
            dep.pending_starts -= 1
            log.exception("starting a runner for %s failed", record.name)
            self._failed_start(dep, f"the backend could not start a runner: {exc}")
            return
        dep.pending_starts -= 1
        dep.runners[runner.id] = runner
        self._spawn(self._watch_exit(dep, runner))
        timeout = record.options.startup_timeout or self.config.default_startup_timeout
        deadline = time.monotonic() + timeout
        delay = 0.02
        assert runner.address is not None
        while runner.state is RunnerState.STARTING:
            if await answers_http(runner.address, timeout=1.0):
                runner.state = RunnerState.READY
                runner.ready_at = time.time()
                runner.idle_since = time.monotonic()
                dep.failures = 0
                dep.router.add(runner)
                dep.wake.set()
                return
            if self.backend.exited(runner) or runner.id in dep.stopping:
                return  # _watch_exit or _stop records why
            if time.monotonic() >= deadline:
                port = record.options.exposed_port or runner.address.port
                await self._stop(
                    dep,
                    runner,
                    RunnerState.FAILED,
                    f"did not answer HTTP on port {port} within startup_timeout ({timeout}s)",
                )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    async def _watch_exit(self, dep: Deployment, runner: Runner) -> None:
        code = await self.backend.wait_exit(runner)
        if runner.id in dep.stopping or not runner.live:
            return
        last = [line for line in tail(runner.log_path, 20) if line.strip()]
        hint = f": {last[-1].strip()}" if last else ""
        self._ended(dep, runner, RunnerState.FAILED, f"exited with status {code}{hint}")

    async def _stop(self, dep: Deployment, runner: Runner, state: RunnerState, reason: str) -> None:
        if runner.id in dep.stopping or not runner.live:
            return
        dep.stopping.add(runner.id)
        runner.state = RunnerState.DRAINING
        dep.router.remove(runner)
        try:
            await self.backend.stop(runner, self.config.stop_grace_seconds)
        finally:
            dep.stopping.discard(runner.id)
            self._ended(dep, runner, state, reason)

    def _ended(self, dep: Deployment, runner: Runner, state: RunnerState, reason: str) -> None:
        was_starting = runner.ready_at is None
        runner.state, runner.reason, runner.ended_at = state, reason, time.time()
        dep.router.remove(runner)
        dep.runners.pop(runner.id, None)
        dep.ended.append(runner)
        for listener in self.on_runner_ended:
            listener(runner)
        log.info("runner %s of %s %s: %s", runner.id, dep.record.name, state.value, reason)
        if state is RunnerState.FAILED and was_starting:
            self._failed_start(dep, f"runner {runner.id} {reason}")
        dep.wake.set()

    def _failed_start(self, dep: Deployment, reason: str) -> None:
        dep.failures += 1
        dep.next_start_at = time.monotonic() + min(MAX_BACKOFF_SECONDS, 2.0 ** (dep.failures - 1))
        others = any(
            r.state in (RunnerState.READY, RunnerState.STARTING) for r in dep.runners.values()
        )
        if not others and dep.pending_starts == 0:
            # Nobody else will serve the waiting requests soon: answer them now.
            dep.router.fail_waiters(
                RouterError(
                    503,
                    "startup_failed",
                    f"no runner of {dep.record.name!r} became ready: {reason}. "
                    f"See `tidal logs {dep.record.name}`.",
                )
            )

    def bundle_dir(self, digest: str) -> Path:
        return self.config.data_dir / "bundles" / digest
