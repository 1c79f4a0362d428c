"""The loop that acts on the policy: one task per deployed app, woken by events
(a request waits, a slot frees, a runner becomes ready or dies) and a slow tick.

Time comes from an injected `Clock`, runners from injected backends, and the
runners' servers are asked things through an injected `Prober`, so that unit
tests drive all of it on a `ManualClock` with in-memory backends. Decisions are
pure functions elsewhere: `policy.decide` (how many runners), `rollout`
(which old runner goes), `capacity` (which idle runner yields its room).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from tidal.backends.base import Backend
from tidal.backends.choice import LOCAL
from tidal.config import PlatformConfig
from tidal.domain.app import AppRecord
from tidal.domain.deployment import Deployment
from tidal.domain.router import AppRouter, RouterError
from tidal.domain.runner import ENDED, SERVING, STARTING, WANTED, Runner, RunnerState
from tidal.observe.logs import runner_log_path
from tidal.scaling import readiness
from tidal.scaling.capacity import IdleRunner, choose_yielders
from tidal.scaling.clock import Clock, SystemClock
from tidal.scaling.launch import LaunchError, asked_for, build_launch, machine_types
from tidal.scaling.placement import Allocation, Inventory
from tidal.scaling.policy import Load, RunnerView, decide
from tidal.scaling.probe import Prober
from tidal.scaling.rollout import Move, rollout_moves

log = logging.getLogger("tidal.scaling")

MAX_BACKOFF_SECONDS = 60.0

__all__ = ["Controller", "Deployment"]


class Controller:
    def __init__(
        self,
        config: PlatformConfig,
        backends: Mapping[str, Backend],
        inventory: Inventory,
        prober: Prober,
        secrets: Callable[[str], dict[str, str]] | None = None,
        clock: Clock | None = None,
        run_loops: bool = True,
    ) -> None:
        self.config = config
        # False: the caller runs reconcile() itself, at times it chooses (the simulator).
        self.run_loops = run_loops
        self.clock: Clock = clock or SystemClock()
        self.prober = prober
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
            router = AppRouter(
                record.options.max_multiplexing,
                self.max_waiting(record),
                wake.set,
                self.clock.monotonic,
            )
            dep = Deployment(
                record, router, wake=wake, ended=deque(maxlen=self.config.ended_runners_kept)
            )
            router.configure(record.options)
            self.deployments[dep.key] = dep
            if self.run_loops:
                dep.task = asyncio.create_task(self._loop(dep), name=f"scale {record.name}")
            self.spawn(self._prestart(record))
        else:
            if record.revision != dep.record.revision:
                dep.failures, dep.next_start_at = 0, 0.0
                dep.openapi_wanted = True
                self.spawn(self._prestart(record))
            dep.record = record
            dep.router.configure(record.options)
            dep.router.max_waiting = self.max_waiting(record)
        dep.wake.set()
        return dep

    async def _secrets_of(self, owner: str) -> Callable[[str], dict[str, str]] | None:
        """The owner's secrets, read in a thread (a database read must not hold up the
        event loop), as what build_launch asks them of; a failure is raised there."""
        read = self.secrets
        if read is None:
            return None
        try:
            found = await asyncio.to_thread(read, owner)
        except Exception as exc:
            failure = exc

            def failed(_owner: str) -> dict[str, str]:
                raise failure

            return failed
        return lambda _owner: found

    async def _prestart(self, record: AppRecord) -> None:
        """A new revision's runner template, started now, so that even its first cold
        start finds one (where the backend has templates: `prestart`)."""
        backend = self.backend_for(record)
        prestart = getattr(backend, "prestart", None)
        types = machine_types(record)
        if prestart is None or not record.options.runner_templates:
            return
        if types[0] not in self.inventory.catalog:
            return
        log_path = runner_log_path(self.config.data_dir, record.owner, record.name, "template")
        stand_in = Runner("template", record.name, record.revision, backend.name, log_path)
        try:
            launch = build_launch(self.config, record, stand_in, backend,
                                  asked_for(self.inventory, types), self.inventory,
                                  await self._secrets_of(record.owner))  # fmt: skip
            await prestart(launch)
        except Exception:  # its runners start fresh instead, and say so
            log.exception("starting a runner template for %s failed", record.name)

    def max_waiting(self, record: AppRecord) -> int:
        """Sync callers the app lets wait for a slot: its own option, or the platform's."""
        return record.max_waiting or self.config.max_waiting_per_app

    async def remove(self, owner: str, name: str) -> None:
        dep = self.deployments.pop((owner, name), None)
        if dep is None:
            return
        if dep.task:
            dep.task.cancel()
        # Its runner templates (where the backend keeps them) would never be claimed.
        getattr(self.backend_for(dep.record), "forget_app", lambda o, n: None)(owner, name)
        dep.router.fail_waiters(RouterError(404, "app_deleted", f"app {name!r} was deleted"))
        await asyncio.gather(
            *(
                self.retire(dep, r, RunnerState.TERMINATED, "app deleted")
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

    def missing_backend(self, record: AppRecord) -> str | None:
        """Why the revision's runners cannot start here now: the backend chosen for it at
        deploy is not open (e.g. Docker down at a restart). Never another in its place: an
        image= app would run on the host without its image, a cluster one on one machine."""
        name = record.spec.backend or LOCAL
        if name in self.backends:
            return None
        return (
            f"revision {record.revision} of {record.name!r} runs on the {name} backend, which "
            "is not available on this platform now (see `tidal doctor`); start it and the "
            "runners start, or deploy again to choose another backend"
        )

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
                await self.retire(dep, runner, RunnerState.TERMINATED, "stopped by request")
                return runner
        return None

    def suspect(self, dep: Deployment, runner: Runner) -> None:
        """A connection to the runner failed: route around it until a probe tells
        whether it still answers (then back in rotation) or not (then replaced)."""
        if runner.suspect or runner.id not in dep.runners:
            return
        runner.suspect = True
        dep.wake.set()
        self.spawn(readiness.check_suspect(self, dep, runner))

    # -- the loop ------------------------------------------------------------
    async def _loop(self, dep: Deployment) -> None:
        while True:
            if dep.runners or dep.failures or dep.router.waits(self.clock.monotonic()):
                await self.clock.wait(dep.wake, self.config.tick_seconds)
            else:
                # At rest (no runner, no failed start, nobody waiting), a tick could
                # change nothing: it sleeps until a request, a deploy or a scale change
                # wakes it, so a thousand idle apps cost the event loop nothing.
                await dep.wake.wait()
            dep.wake.clear()
            try:
                self.reconcile(dep)
            except Exception:  # a bug here must not stop scaling for good
                log.exception("scaling %s failed", dep.record.name)

    def reconcile(self, dep: Deployment) -> None:
        # Runs on every wake (the simulator runs it once per request): one pass over
        # the runners, and nothing computed that the pass does not need.
        now = self.clock.monotonic()
        record = dep.record
        options = record.options
        fresh: list[Runner] = []  # the current revision's, not suspect
        old: list[Runner] = []
        for r in dep.runners.values():
            if r.revision != record.revision:
                old.append(r)
            elif not r.suspect:
                fresh.append(r)
        if old:
            self._roll_out(dep, fresh, old)
        views: list[RunnerView] = []  # fresh ones the policy counts
        waiting: list[Runner] = []  # of those, not launched yet (backoff, capacity)
        for r in fresh:
            state = r.state
            if state in WANTED:
                # An open WebSocket keeps its runner from idling out, without being load.
                busy = r.in_flight + r.long_lived
                views.append(RunnerView(r.id, state in SERVING, busy, now - r.idle_since))
                if state is RunnerState.FAILURE_DELAY or state is RunnerState.PENDING:
                    waiting.append(r)
        ceiling = self.ceiling(dep)
        decision = decide(
            options,
            max_multiplexing=options.max_multiplexing,
            ceiling=ceiling,
            load=Load(dep.router.executing, dep.router.waits(now)),
            runners=tuple(views),
        )
        # While an older revision still serves, bring up as many new runners as it has.
        start = decision.start
        if old:
            old_live = sum(r.state in WANTED or r.state is RunnerState.DRAINING for r in old)
            start = max(start, min(old_live, ceiling) - len(views))
        if start > 0 and (missing := self.missing_backend(record)):
            dep.router.fail_waiters(RouterError(503, "backend_unavailable", missing))
            start = 0
        backing_off = now < dep.next_start_at
        for r in waiting:
            if r.state is RunnerState.FAILURE_DELAY and not backing_off:
                r.transition(RunnerState.PENDING, "", at=self.clock.time())
                self.spawn(self._launch(dep, r))
        for _ in range(max(0, start)):
            runner = self._new_runner(dep, backing_off)
            if runner.state is RunnerState.PENDING:
                self.spawn(self._launch(dep, runner))
        if backing_off and any(r.state is RunnerState.FAILURE_DELAY for r in dep.runners.values()):
            self.spawn(self._wake_after(dep, dep.next_start_at - now))
        for runner_id in decision.stop:
            self.spawn(self.retire(dep, dep.runners[runner_id], RunnerState.TERMINATED,
                                   f"idle for keep_alive ({options.keep_alive}s)"))  # fmt: skip
        # Fewer wanted than exist: runners still waiting (backoff, capacity) go first.
        surplus = len(views) - decision.desired - len(decision.stop) - max(0, start)
        for r in waiting[::-1][: max(0, surplus)]:
            self.end(dep, r, RunnerState.TERMINATED, "no longer needed")

    def _roll_out(self, dep: Deployment, fresh: list[Runner], old: list[Runner]) -> None:
        replaced = f"replaced by revision {dep.record.revision}"
        for runner, move in rollout_moves(fresh, old):
            if move is Move.DROP:
                self.end(dep, runner, RunnerState.TERMINATED, replaced)
            elif move is Move.DRAIN:
                runner.transition(RunnerState.DRAINING, at=self.clock.time())
                dep.router.remove(runner)
            else:
                self.spawn(self.retire(dep, runner, RunnerState.TERMINATED, replaced))

    async def _wake_after(self, dep: Deployment, seconds: float) -> None:
        await self.clock.sleep(seconds)
        dep.wake.set()

    @property
    def tasks_running(self) -> int:
        """How many of its tasks (launches, stops, watches) have not finished."""
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one runner's life -----------------------------------------------------
    def _new_runner(self, dep: Deployment, backing_off: bool) -> Runner:
        """A runner counted from this moment (so the next pass starts no twin): PENDING,
        or in FAILURE_DELAY until the backoff after failed starts ends."""
        record = dep.record
        runner_id = "r-" + uuid.uuid4().hex[:10]
        runner = Runner(
            id=runner_id,
            app=record.name,
            revision=record.revision,
            backend=self.backend_for(record).name,
            log_path=runner_log_path(self.config.data_dir, record.owner, record.name, runner_id),
            state=RunnerState.FAILURE_DELAY if backing_off else RunnerState.PENDING,
            reason=f"waiting after {dep.failures} failed start(s)" if backing_off else "",
            created_at=self.clock.time(),
            idle_since=self.clock.monotonic(),
        )
        dep.runners[runner.id] = runner
        return runner

    async def _launch(self, dep: Deployment, runner: Runner) -> None:
        record = dep.record
        backend = self.runner_backend(runner)
        types = machine_types(record)
        if backend.own_placement:
            # The cluster's scheduler places it; start() waits there (PENDING) for room.
            allocation = asked_for(self.inventory, types)
        else:
            placed = await self._wait_for_capacity(dep, runner, types)
            if placed is None:
                return  # no longer needed
            allocation = placed
            runner.transition(RunnerState.SETUP, "", at=self.clock.time())
        runner.machine_type, runner.gpu_ids = allocation.machine_type, allocation.gpu_ids
        try:
            launch = build_launch(
                self.config, record, runner, backend, allocation, self.inventory,
                await self._secrets_of(record.owner),
            )  # fmt: skip
        except LaunchError as exc:
            log.error("runner %s of %s: %s", runner.id, record.name, exc)
            self.end(dep, runner, RunnerState.FAILED, str(exc))
            return
        if record.options.exposed_port is not None and not launch.isolate_network:
            launch.log_path.parent.mkdir(parents=True, exist_ok=True)
            with launch.log_path.open("a") as log_file:
                log_file.write(f"tidal: note: {self.port_note(dep)}\n")
            log.warning("%s: %s", record.name, self.port_note(dep))
        try:
            await backend.start(runner, launch)
        except Exception as exc:
            log.exception("starting a runner for %s failed", record.name)
            self.end(dep, runner, RunnerState.FAILED, f"the backend could not start it: {exc}")
            return
        if runner.state is RunnerState.PENDING:  # placed by the backend itself
            runner.transition(RunnerState.SETUP, "", at=self.clock.time())
        elif not runner.live:  # no longer wanted while the backend placed it
            await backend.stop(runner, self.config.stop_grace_seconds)
            return
        self.spawn(readiness.watch_exit(self, dep, runner))
        await readiness.wait_ready(self, dep, runner)

    async def _wait_for_capacity(
        self, dep: Deployment, runner: Runner, types: list[str]
    ) -> Allocation | None:
        """Hold room on this host for the runner, waiting (visibly, in its reason) while
        there is none, and asking idle runners of other apps to yield theirs."""
        num_gpus = dep.record.options.num_gpus
        while True:
            placed = self.inventory.allocate(runner.id, types, num_gpus)
            if not isinstance(placed, str):
                return placed
            runner.reason = placed
            self._make_room(dep, types, num_gpus)
            await self.clock.wait(self._capacity_freed, 1.0)
            if runner.state is not RunnerState.PENDING:
                return None

    def _make_room(self, dep: Deployment, types: list[str], num_gpus: int | None) -> None:
        """Stop idle runners of other apps (above their min_concurrency, idle at least
        the guaranteed floor, longest idle first) when that makes this one fit."""
        now = self.clock.monotonic()
        candidates: list[IdleRunner] = []
        freeing: list[Allocation] = []
        by_id: dict[str, tuple[Deployment, Runner]] = {}
        for other in self.deployments.values():
            mine = other is dep
            live = [r for r in other.runners.values() if r.state in WANTED]
            idle = sorted(
                (r for r in live if r.state is RunnerState.IDLE and not r.in_flight + r.long_lived),
                key=lambda r: r.idle_since,
            )
            spare = max(0, len(live) - other.record.options.min_concurrency)
            for r in other.runners.values():
                held = self.inventory.held.get(r.id)
                if held is not None and r.state is RunnerState.TERMINATING:
                    freeing.append(held)
            for i, r in enumerate(idle):
                held = self.inventory.held.get(r.id)
                if mine or held is None or other.router.waits(now):
                    continue  # an app with waiting requests keeps its runners
                candidates.append(
                    IdleRunner(r.id, other.key, held, now - r.idle_since, spare=i < spare)
                )
                by_id[r.id] = (other, r)
        chosen = choose_yielders(
            types,
            num_gpus,
            self.inventory,
            candidates,
            floor=self.config.yield_idle_floor_seconds,
            freeing=freeing,
        )
        for runner_id in chosen:
            other, r = by_id[runner_id]
            reason = f"stopped for app {dep.record.name}'s waiting request"
            log.info("runner %s of %s yields: %s", r.id, other.record.name, reason)
            self.spawn(self.retire(other, r, RunnerState.TERMINATED, reason))

    async def retire(
        self,
        dep: Deployment,
        runner: Runner,
        state: RunnerState,
        reason: str,
        count_failure: bool = True,
    ) -> None:
        """Stop a runner: gracefully through TERMINATING when it was launched."""
        if runner.state is RunnerState.TERMINATING or not runner.live:
            return
        if runner.state in (RunnerState.FAILURE_DELAY, RunnerState.PENDING):
            self.end(dep, runner, state, reason, count_failure)
            return
        runner.transition(RunnerState.TERMINATING, reason, at=self.clock.time())
        dep.router.remove(runner)
        backend = self.runner_backend(runner)
        try:
            await backend.stop(runner, self.config.stop_grace_seconds)
        finally:
            if state is RunnerState.FAILED:  # e.g. it stopped answering: out of memory?
                reason = getattr(backend, "exit_reason", lambda r: None)(runner) or reason
            self.end(dep, runner, state, reason, count_failure)

    def end(
        self,
        dep: Deployment,
        runner: Runner,
        state: RunnerState,
        reason: str,
        count_failure: bool = True,
    ) -> None:
        assert state in ENDED
        # Launched, never ready: a failed start (the backoff counts those).
        was_starting = runner.ready_at is None and (
            runner.state in STARTING or runner.state is RunnerState.TERMINATING
        )
        runner.transition(state, reason, at=self.clock.time())
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
            self.failed_start(dep, f"runner {runner.id} {reason}")
        dep.wake.set()

    def failed_start(self, dep: Deployment, reason: str, failed: Runner | None = None) -> None:
        dep.failures += 1
        dep.next_start_at = self.clock.monotonic() + min(
            MAX_BACKOFF_SECONDS, 2.0 ** (dep.failures - 1)
        )
        others = any(
            r.state in WANTED and r.state is not RunnerState.FAILURE_DELAY
            for r in dep.runners.values()
            if r is not failed
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
