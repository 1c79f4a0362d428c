"""The loop that acts on the policy: one task per deployed app, woken by events
(a request waits, a slot frees, a runner becomes ready or dies) and a slow tick."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidal.backends.base import Backend, Runner, RunnerLaunch, RunnerState
from tidal.backends.choice import LOCAL
from tidal.config import PlatformConfig
from tidal.control.openapi import openapi_problem
from tidal.control.registry import AppRecord
from tidal.environments import Environments, runner_setup
from tidal.gateway.http1 import request_once
from tidal.gateway.router import AppRouter, RouterError
from tidal.gateway.upstream import answers_http
from tidal.observe.logs import runner_log_path, tail
from tidal.scaling.placement import Allocation, Inventory
from tidal.scaling.policy import Load, RunnerView, decide
from tidal.storage.data import data_root

log = logging.getLogger("tidal.scaling")

MAX_BACKOFF_SECONDS = 60.0


@dataclass
class Deployment:
    record: AppRecord
    router: AppRouter
    runners: dict[str, Runner] = field(default_factory=dict)
    ended: deque[Runner] = field(default_factory=deque)
    failures: int = 0
    next_start_at: float = 0.0  # monotonic; backoff after failed starts
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    stopping: set[str] = field(default_factory=set)
    openapi_wanted: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.record.owner, self.record.name)


class Controller:
    def __init__(
        self,
        config: PlatformConfig,
        backends: Mapping[str, Backend],
        inventory: Inventory,
        secrets: Callable[[str], dict[str, str]] | None = None,
    ) -> None:
        self.config = config
        # An owner's secrets, read as each runner starts (tidal.control.secrets).
        self.secrets = secrets
        # Each revision names its backend (AppSpec.backend, chosen at deploy).
        self.backends: dict[str, Backend] = dict(backends)
        self.inventory = inventory
        # Set when a runner ends and frees capacity: pending runners look again.
        self._capacity_freed = asyncio.Event()
        self.deployments: dict[tuple[str, str], Deployment] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Called with each runner that ends (the gateway drops its connections).
        self.on_runner_ended: list[Callable[[Runner], None]] = []
        # Called with an OpenAPI document a direct server serves (the registry keeps it).
        self.on_openapi_found: list[Callable[[AppRecord, dict[str, Any]], None]] = []

    # -- what the control plane calls --------------------------------------
    def apply(self, record: AppRecord) -> Deployment:
        """Create or update the app's deployment after a deploy or a scale change."""
        dep = self.deployments.get((record.owner, record.name))
        if dep is None:
            wake = asyncio.Event()
            router = AppRouter(record.options.max_multiplexing, self.max_waiting(record), wake.set)
            dep = Deployment(
                record, router, wake=wake, ended=deque(maxlen=self.config.ended_runners_kept)
            )
            router.configure(record.options)
            self.deployments[dep.key] = dep
            dep.task = asyncio.create_task(self._loop(dep), name=f"scale {record.name}")
        else:
            if record.revision != dep.record.revision:
                dep.failures, dep.next_start_at = 0, 0.0
                dep.openapi_wanted = True
            dep.record = record
            dep.router.configure(record.options)
            dep.router.max_waiting = self.max_waiting(record)
        dep.wake.set()
        return dep

    def max_waiting(self, record: AppRecord) -> int:
        """Sync callers the app lets wait for a slot: its own option, or the platform's."""
        return record.max_waiting or self.config.max_waiting_per_app

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
        for backend in self.backends.values():
            backend.kill_all()

    def backend_for(self, record: AppRecord) -> Backend:
        """The backend of the record's revision (older records: the local one)."""
        name = record.spec.backend or LOCAL
        return self.backends.get(name) or next(iter(self.backends.values()))

    def runner_backend(self, runner: Runner) -> Backend:
        return self.backends[runner.backend]

    def ceiling(self, dep: Deployment) -> int:
        options = dep.record.options
        top = options.max_concurrency or self.config.default_max_concurrency
        if options.exposed_port is not None and not self.backend_for(dep.record).can_share_port():
            return 1
        return top

    def port_note(self, dep: Deployment) -> str:
        if dep.record.options.exposed_port is None:
            return ""
        if self.backend_for(dep.record).can_share_port():
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
        runners = [r for r in dep.runners.values() if r.id not in dep.stopping]
        fresh = [r for r in runners if r.revision == current and not r.suspect]
        old = [r for r in runners if r.revision != current]
        self._roll_out(dep, fresh, old)
        views = tuple(
            # An open WebSocket keeps its runner from idling out, without being load.
            RunnerView(
                r.id, r.state is RunnerState.READY, r.in_flight + r.long_lived, now - r.idle_since
            )
            for r in fresh
            if r.state in (RunnerState.PENDING, RunnerState.STARTING, RunnerState.READY)
        )
        decision = decide(
            options,
            max_multiplexing=options.max_multiplexing,
            ceiling=self.ceiling(dep),
            load=Load(dep.router.executing, dep.router.waits(now)),
            runners=views,
        )
        # While an older revision still serves, bring up as many new runners as it has.
        start = max(decision.start, min(len(old), self.ceiling(dep)) - len(views))
        if start > 0:
            if now < dep.next_start_at:
                # Backing off after failed starts; look again when it ends.
                asyncio.get_running_loop().call_later(dep.next_start_at - now, dep.wake.set)
            else:
                for _ in range(start):
                    self._spawn(self._launch(dep, self._new_runner(dep)))
        for runner_id in decision.stop:
            self._spawn(self._stop(dep, dep.runners[runner_id], RunnerState.GONE,
                                   f"idle for keep_alive ({options.keep_alive}s)"))  # fmt: skip
        # Fewer wanted than exist: runners still waiting for capacity go first.
        surplus = len(views) - decision.desired - len(decision.stop) - max(0, start)
        for r in [r for r in fresh if r.state is RunnerState.PENDING][::-1][: max(0, surplus)]:
            self._ended(dep, r, RunnerState.GONE, "no longer needed")

    def _roll_out(self, dep: Deployment, fresh: list[Runner], old: list[Runner]) -> None:
        """A new revision takes over without dropping requests: the old runners keep
        serving until a new one is ready, then take no new work and stop once idle."""
        if not old:
            return
        new_ready = any(r.state is RunnerState.READY for r in fresh)
        for r in old:
            if r.state is RunnerState.PENDING:
                self._ended(dep, r, RunnerState.GONE, f"replaced by revision {dep.record.revision}")
            elif new_ready and r.state in (RunnerState.READY, RunnerState.STARTING):
                r.state = RunnerState.DRAINING if r.state is RunnerState.READY else r.state
                if r.state is RunnerState.STARTING:
                    self._spawn(self._stop(dep, r, RunnerState.GONE,
                                           f"replaced by revision {dep.record.revision}"))  # fmt: skip
            if r.state is RunnerState.DRAINING and r.in_flight + r.long_lived == 0:
                self._spawn(self._stop(dep, r, RunnerState.GONE,
                                       f"replaced by revision {dep.record.revision}"))  # fmt: skip

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one runner's life -----------------------------------------------------
    def _new_runner(self, dep: Deployment) -> Runner:
        """A PENDING runner, counted from this moment (so the next pass starts no twin)."""
        record = dep.record
        runner_id = "r-" + uuid.uuid4().hex[:10]
        runner = Runner(
            id=runner_id,
            app=record.name,
            revision=record.revision,
            backend=self.backend_for(record).name,
            log_path=runner_log_path(self.config.data_dir, record.owner, record.name, runner_id),
        )
        dep.runners[runner.id] = runner
        return runner

    async def _launch(self, dep: Deployment, runner: Runner) -> None:
        record = dep.record
        options = record.options
        backend = self.runner_backend(runner)
        types = (
            [options.machine_type]
            if isinstance(options.machine_type, str)
            else options.machine_type
        )
        if backend.own_placement:
            # The cluster's scheduler places it; start() waits there (PENDING) for room.
            allocation = self._asked_for(types, options.num_gpus)
        else:
            while True:  # wait for capacity, visibly
                placed = self.inventory.allocate(runner.id, types, options.num_gpus)
                if not isinstance(placed, str):
                    allocation = placed
                    break
                runner.reason = placed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._capacity_freed.wait(), 1.0)
                if runner.state is not RunnerState.PENDING:
                    return  # no longer needed
            runner.state, runner.reason = RunnerState.STARTING, ""
            runner.starting_at = time.time()
        runner.machine_type, runner.gpu_ids = allocation.machine_type, allocation.gpu_ids
        environment = (
            Environments(self.config.data_dir).get(record.spec.environment)
            if record.spec.environment
            else None
        )
        python, env_vars = runner_setup(self.config.data_dir, environment)
        try:
            secret_env = self.secrets(record.owner) if self.secrets else {}
        except Exception as exc:
            log.error(
                "runner %s of %s: its secrets could not be read: %s", runner.id, record.name, exc
            )
            self._ended(dep, runner, RunnerState.FAILED, f"its secrets could not be read: {exc}")
            return
        launch = RunnerLaunch(
            runner_id=runner.id,
            spec=record.spec.model_copy(update={"options": options}),
            revision=record.revision,
            bundle_dir=self.bundle_dir(record.spec.bundle_digest or ""),
            log_path=runner.log_path,
            env={
                **secret_env,  # first: the platform's own variables win
                **env_vars,
                "TIDAL_RUNNER_ID": runner.id,
                "TIDAL_APP": record.name,
                "TIDAL_REVISION": str(record.revision),
                "TIDAL_MACHINE_TYPE": allocation.machine_type,
                # What endpoints print while serving a request, with its id (App runners).
                "TIDAL_REQUEST_LOG": str(runner.log_path.with_suffix(".requests.jsonl")),
                # Only the GPUs this runner holds; none at all on a CPU machine type.
                "CUDA_VISIBLE_DEVICES": ",".join(allocation.gpu_ids),
            },
            isolate_network=backend.can_share_port(),
            data_dir=data_root(self.config.data_dir),
            python=python,
            machine_types=tuple(types),
            machine_type=allocation.machine_type,
            cpus=allocation.cpus,
            memory_mb=allocation.memory_mb,
            gpu_ids=allocation.gpu_ids,
            num_gpus=(
                len(allocation.gpu_ids)
                if not backend.own_placement
                else self.inventory.gpus_needed(
                    self.inventory.catalog[allocation.machine_type], options.num_gpus
                )
            ),
        )
        if options.exposed_port is not None and not launch.isolate_network:
            launch.log_path.parent.mkdir(parents=True, exist_ok=True)
            with launch.log_path.open("a") as log_file:
                log_file.write(f"tidal: note: {self.port_note(dep)}\n")
            log.warning("%s: %s", record.name, self.port_note(dep))
        try:
            await backend.start(runner, launch)
        except Exception as exc:
            log.exception("starting a runner for %s failed", record.name)
            self._ended(dep, runner, RunnerState.FAILED, f"the backend could not start it: {exc}")
            return
        if runner.state is RunnerState.PENDING:  # placed by the backend itself
            runner.state, runner.reason = RunnerState.STARTING, ""
            runner.starting_at = time.time()
        elif not runner.live:  # no longer wanted while the backend placed it
            await backend.stop(runner, self.config.stop_grace_seconds)
            return
        self._spawn(self._watch_exit(dep, runner))
        await self._wait_ready(dep, runner)

    async def _wait_ready(self, dep: Deployment, runner: Runner) -> None:
        options = dep.record.options
        timeout = options.startup_timeout or self.config.default_startup_timeout
        started = time.monotonic()
        assert runner.address is not None
        while runner.state is RunnerState.STARTING:
            if await answers_http(runner.address, timeout=1.0):
                runner.state = RunnerState.READY
                runner.ready_at = time.time()
                runner.idle_since = time.monotonic()
                dep.failures = 0
                dep.router.add(runner)
                dep.wake.set()
                self._after_ready(dep, runner)
                return
            if self.runner_backend(runner).exited(runner) or runner.id in dep.stopping:
                return  # _watch_exit or _stop records why
            waited = time.monotonic() - started
            if waited >= timeout:
                port = options.exposed_port or runner.address.port
                reason = f"did not answer HTTP on port {port} within startup_timeout ({timeout}s)"
                runner.reason = reason  # shown while it drains
                # Answer the waiting requests now, not after the stop's grace period.
                self._failed_start(dep, f"runner {runner.id} {reason}", failed=runner)
                await self._stop(dep, runner, RunnerState.FAILED, reason, count_failure=False)
                return
            # Probing a closed port costs little; probe often while a start is young,
            # since every millisecond here is cold-start latency.
            await asyncio.sleep(0.005 if waited < 2 else 0.05 if waited < 10 else 0.25)

    def _after_ready(self, dep: Deployment, runner: Runner) -> None:
        spec = dep.record.spec
        if spec.health_check is not None and spec.health_check.call_regularly:
            self._spawn(self._health_loop(dep, runner))
        if spec.kind == "function" and spec.openapi is None and dep.openapi_wanted:
            dep.openapi_wanted = False  # once per revision
            self._spawn(self._fetch_openapi(dep, runner))

    async def _health_loop(self, dep: Deployment, runner: Runner) -> None:
        """Call the App's health check; after `failure_threshold` failures in a row
        (once `start_period_seconds` have passed) the runner is replaced."""
        check = dep.record.spec.health_check
        assert check is not None and runner.address is not None
        await asyncio.sleep(
            max(0.0, check.start_period_seconds - (time.time() - runner.created_at))
        )
        failures = 0
        while runner.state is RunnerState.READY:
            try:
                status, _ = await request_once(
                    runner.address, check.method, check.path, check.timeout_seconds
                )
                problem = "" if 200 <= status < 300 else f"HTTP {status}"
            except (OSError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            failures = failures + 1 if problem else 0
            if failures >= check.failure_threshold:
                await self._stop(dep, runner, RunnerState.FAILED,
                                 f"health check {check.path} failed {failures} times in a row "
                                 f"(last: {problem})")  # fmt: skip
                return
            await asyncio.sleep(self.config.health_check_interval_seconds)

    async def _fetch_openapi(self, dep: Deployment, runner: Runner) -> None:
        """A direct server's own /openapi.json, if it serves one, becomes the app's."""
        assert runner.address is not None
        try:
            status, body = await request_once(runner.address, "GET", "/openapi.json", 5.0)
            document = json.loads(body) if status == 200 else None
        except (OSError, TimeoutError, ValueError):
            return
        if document is not None and openapi_problem(document) is None:
            for listener in self.on_openapi_found:
                listener(dep.record, document)

    async def _watch_exit(self, dep: Deployment, runner: Runner) -> None:
        code = await self.runner_backend(runner).wait_exit(runner)
        if runner.id in dep.stopping or not runner.live:
            return
        last = [line for line in tail(runner.log_path, 20) if line.strip()]
        hint = f": {last[-1].strip()}" if last else ""
        self._ended(dep, runner, RunnerState.FAILED, f"exited with status {code}{hint}")

    async def _stop(
        self,
        dep: Deployment,
        runner: Runner,
        state: RunnerState,
        reason: str,
        count_failure: bool = True,
    ) -> None:
        if runner.id in dep.stopping or not runner.live:
            return
        if runner.state is RunnerState.PENDING:
            self._ended(dep, runner, state, reason, count_failure)
            return
        dep.stopping.add(runner.id)
        runner.state = RunnerState.DRAINING
        dep.router.remove(runner)
        try:
            await self.runner_backend(runner).stop(runner, self.config.stop_grace_seconds)
        finally:
            dep.stopping.discard(runner.id)
            self._ended(dep, runner, state, reason, count_failure)

    def _ended(
        self,
        dep: Deployment,
        runner: Runner,
        state: RunnerState,
        reason: str,
        count_failure: bool = True,
    ) -> None:
        was_starting = runner.ready_at is None and runner.state is not RunnerState.PENDING
        runner.state, runner.reason, runner.ended_at = state, reason, time.time()
        dep.router.remove(runner)
        dep.runners.pop(runner.id, None)
        dep.ended.append(runner)
        if runner.id in self.inventory.held:
            self.inventory.release(runner.id)
            # Wake every pending runner (of any app) to try again.
            self._capacity_freed.set()
            self._capacity_freed = asyncio.Event()
        for listener in self.on_runner_ended:
            listener(runner)
        log.info("runner %s of %s %s: %s", runner.id, dep.record.name, state.value, reason)
        if state is RunnerState.FAILED and was_starting and count_failure:
            self._failed_start(dep, f"runner {runner.id} {reason}")
        dep.wake.set()

    def _failed_start(self, dep: Deployment, reason: str, failed: Runner | None = None) -> None:
        dep.failures += 1
        dep.next_start_at = time.monotonic() + min(MAX_BACKOFF_SECONDS, 2.0 ** (dep.failures - 1))
        others = any(
            r.state in (RunnerState.PENDING, RunnerState.STARTING, RunnerState.READY)
            for r in dep.runners.values()
            if r is not failed and r.id not in dep.stopping
        )
        if not others:
            # Nobody else will serve the waiting requests soon: answer them now.
            dep.router.fail_waiters(
                RouterError(
                    503,
                    "startup_failed",
                    f"no runner of {dep.record.name!r} became ready: {reason}. "
                    f"See `tidal logs {dep.record.name}`.",
                )
            )

    def _asked_for(self, types: list[str], num_gpus: int | None) -> Allocation:
        """For a backend that places runners itself: the first type, unplaced."""
        machine = self.inventory.catalog[types[0]]
        return Allocation(machine.name, machine.cpus, machine.memory_mb)

    def bundle_dir(self, digest: str) -> Path:
        return self.config.data_dir / "bundles" / digest
