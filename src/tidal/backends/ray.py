"""The ray backend: each runner is a Ray actor that owns the runner's process.

Ray only decides where a runner runs (CPUs, memory, GPUs, a `machine:<TYPE>`
custom resource, `region` node labels); tidal keeps its own gateway, router and
scaling policy, and talks to runners directly over HTTP. Actors are owned by the
platform's Ray driver, so they die with it; a restarted platform also removes
the named actors of its namespace that it does not track.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import socket
import time
import zipfile
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidal.backends.base import Address, BackendUnavailable, Runner, RunnerLaunch, RunnerState
from tidal.backends.ray_actor import RunnerActor, RunnerOrder
from tidal.config import PlatformConfig
from tidal.machines import MachineType, load_machines

log = logging.getLogger("tidal.ray")

MACHINE_RESOURCE = "machine:{}"  # a node started with it offers that machine type
# Enough of the resource for thousands of runners on one node, yet a node without it
# never gets the type.
MACHINE_RESOURCE_SHARE = 0.001
REGION_LABEL = "region"
LOG_POLL_SECONDS = 0.5
# A runner whose port stopped answering this many probes in a row (once it had
# answered) is gone, even before Ray reports its node dead.
PROBE_FAILURES = 3
PLACE_ATTEMPTS = 3
# The node list in /api/v1/health is at most this old (Ray's GCS is not asked per call).
DESCRIBE_SECONDS = 2.0

HOW_TO_FIX = (
    "Start a cluster with `ray start --head` (and `ray start --address HEAD:6379` on "
    "each other machine, with tidal installed there too), then run "
    "`tidal server --backend ray --ray-address HEAD:6379` (or set RAY_ADDRESS)."
)


@dataclass
class _Handle:
    actor: Any  # ray.actor.ActorHandle
    log_path: Path
    exit_code: int | None = None
    shipped: dict[str, int] = field(default_factory=dict)  # log name -> bytes copied
    # Set when the runner's actor says its server listens (RunnerActor.listening).
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    heard: asyncio.Future[None] | None = None


def open_ray_backend(config: PlatformConfig, env: Mapping[str, str]) -> RayBackend:
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailable(
            f"Ray is not installed ({exc}): install it with `pip install 'tidal[ray]'`. "
            + HOW_TO_FIX
        ) from None
    address = config.ray_address or os.environ.get("RAY_ADDRESS") or "auto"
    if address != "auto":
        _check_reachable(address)
    namespace = (
        "tidal-"
        + hashlib.sha256(
            f"{socket.gethostname()}:{config.data_dir.resolve()}".encode()
        ).hexdigest()[:12]
    )
    try:
        ray.init(
            address=address, namespace=namespace, log_to_driver=False,
            ignore_reinit_error=True, configure_logging=False,
        )  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BackendUnavailable(
            f"cannot reach a Ray cluster at {address} ({exc}). {HOW_TO_FIX}"
        ) from None
    _, catalog = load_machines(config.machines)
    return RayBackend(config, env, catalog, namespace)


def _check_reachable(address: str) -> None:
    """ray.init retries an unreachable address for minutes: fail in seconds instead."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
            pass
    except (OSError, ValueError) as exc:
        raise BackendUnavailable(
            f"cannot reach the Ray cluster at {address} ({exc}). {HOW_TO_FIX}"
        ) from None


class RayBackend:
    name = "ray"
    own_placement = True

    def __init__(
        self,
        config: PlatformConfig,
        env: Mapping[str, str],
        catalog: Mapping[str, MachineType],
        namespace: str,
    ) -> None:
        import ray

        self._config = config
        self._env = dict(env)
        self._catalog = dict(catalog)
        self.namespace = namespace
        self._actor_class = ray.remote(RunnerActor)
        self._handles: dict[str, _Handle] = {}
        self._described: tuple[float, list[dict[str, Any]]] | None = None
        # A bundle folder's zip in Ray's object store, sent once per folder.
        self._bundles: dict[Path, tuple[str, Any]] = {}

    # -- placement -------------------------------------------------------------
    def _choose_type(self, launch: RunnerLaunch) -> tuple[MachineType, dict[str, float]]:
        """The first of the app's machine types some node offers (room now first);
        when no node offers any of them, the first type, placed by size alone."""
        import ray

        total = ray.cluster_resources()  # type: ignore[no-untyped-call]
        free = ray.available_resources()  # type: ignore[no-untyped-call]
        offered = [
            self._catalog[t]
            for t in launch.machine_types or (launch.machine_type,)
            if t in self._catalog and MACHINE_RESOURCE.format(t) in total
        ]
        if not offered:
            machine = self._catalog.get(launch.machine_type) or MachineType(
                launch.machine_type, launch.cpus, launch.memory_mb, launch.num_gpus
            )
            return machine, {}
        for machine in offered:
            gpus = self._gpus(machine, launch)
            if (
                free.get("CPU", 0) >= machine.cpus
                and free.get("GPU", 0) >= gpus
                and free.get(MACHINE_RESOURCE.format(machine.name), 0) >= MACHINE_RESOURCE_SHARE
            ):
                break
        else:
            machine = offered[0]  # none has room now: wait for the preferred one
        return machine, {MACHINE_RESOURCE.format(machine.name): MACHINE_RESOURCE_SHARE}

    def _gpus(self, machine: MachineType, launch: RunnerLaunch) -> int:
        wanted = launch.spec.options.num_gpus
        return machine.gpus if wanted is None else wanted

    def _bundle(self, bundle_dir: Path) -> tuple[str, Any]:
        import ray

        if bundle_dir not in self._bundles:
            data = _zip_folder(bundle_dir)
            self._bundles[bundle_dir] = (hashlib.sha256(data).hexdigest(), ray.put(data))
        return self._bundles[bundle_dir]

    # -- the Backend protocol --------------------------------------------------
    def reap_orphans(self) -> int:
        """Kill the actors of this platform's namespace that it does not track (an
        earlier platform process's; Ray usually killed them with their owner already)."""
        import ray

        reaped = 0
        for name in ray.util.list_named_actors():
            if name.split(".")[0] in self._handles:
                continue
            with contextlib.suppress(ValueError, ray.exceptions.RayError):
                ray.kill(ray.get_actor(name), no_restart=True)
                reaped += 1
        return reaped

    def can_share_port(self) -> bool:
        return False  # two exposed_port runners could land on one node

    async def start(self, runner: Runner, launch: RunnerLaunch) -> None:
        import ray

        for attempt in range(PLACE_ATTEMPTS):
            try:
                where = await self._place(runner, launch, attempt)
                break
            except ray.exceptions.ActorDiedError:
                # Placed on a node that died before Ray noticed (its resources still
                # counted): place again once the cluster's view has caught up.
                if attempt == PLACE_ATTEMPTS - 1 or runner.state is not RunnerState.PENDING:
                    raise
                await asyncio.sleep(2.0)
        if where is None:
            return  # no longer wanted
        runner.address = Address(str(where["host"]), int(where["port"]))
        handle = self._handles[runner.id]
        handle.heard = asyncio.ensure_future(_hear_listening(handle))
        runner.gpu_ids = tuple(where["gpu_ids"])
        runner.pid = None  # a process on another node: nothing this machine can signal
        _note(launch.log_path, f"on Ray node {where['node_id'][:12]} as {runner.machine_type}, "
              f"pid {where['pid']}, {where['host']}:{where['port']}")  # fmt: skip

    async def _place(
        self, runner: Runner, launch: RunnerLaunch, attempt: int
    ) -> dict[str, Any] | None:
        """Create the runner's actor and launch the runner in it; None when the runner
        stopped being wanted while Ray looked for room."""
        machine, custom = await asyncio.to_thread(self._choose_type, launch)
        gpus = self._gpus(machine, launch)
        options = launch.spec.options
        digest, bundle_ref = await asyncio.to_thread(self._bundle, launch.bundle_dir)
        selector = {REGION_LABEL: f"in({','.join(options.regions)})"} if options.regions else None
        actor: Any = self._actor_class.options(
            name=runner.id if attempt == 0 else f"{runner.id}.{attempt}",
            num_cpus=machine.cpus, num_gpus=gpus,
            memory=machine.memory_mb * 2**20, resources=custom,
            max_restarts=0, max_concurrency=8,
            **({"label_selector": selector} if selector else {}),
        ).remote()  # fmt: skip
        handle = _Handle(actor, launch.log_path)
        self._handles[runner.id] = handle
        runner.machine_type = machine.name
        env = {**self._env, **launch.env, "TIDAL_MACHINE_TYPE": machine.name}
        for key in ("VIRTUAL_ENV", "PYTHONPATH", "PATH", "TIDAL_REQUEST_LOG"):
            env.pop(key, None)  # the platform's paths; the actor sets its node's own
        order = RunnerOrder(
            runner_id=runner.id, digest=digest, entry=launch.spec.entry, env=env,
            requirements=list(options.requirements), python_version=options.python_version,
            exposed_port=options.exposed_port, host=self._config.ray_runner_host,
            node_dir=self._config.ray_node_dir, bundle_limit=self._config.bundle_limit_bytes,
        )  # fmt: skip
        needs = f"{machine.cpus:g} CPU, {machine.memory_mb} MB memory, {gpus} GPU"
        needs += f", {next(iter(custom))}" if custom else ""
        needs += f", {REGION_LABEL} in {options.regions}" if options.regions else ""
        runner.reason = f"waiting for Ray to place it on a node with {needs}"
        launched = _future(actor.launch.remote(order, bundle_ref))
        try:
            while not launched.done():
                await asyncio.wait({launched}, timeout=1.0)
                if runner.state is not RunnerState.PENDING:
                    self._forget(runner.id)
                    return None
            where: dict[str, Any] = launched.result()
        except BaseException:
            self._forget(runner.id)
            raise
        return where

    async def wait_exit(self, runner: Runner) -> int:
        handle = self._handles[runner.id]
        exited = _future(handle.actor.wait.remote())
        watchers = {
            exited,
            asyncio.ensure_future(self._ship_logs(handle)),
            asyncio.ensure_future(self._watch_answers(runner)),
        }
        try:
            done, _ = await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in watchers:
                task.cancel()
        if exited in done and exited.exception() is None:
            code = int(exited.result())
        else:
            code = -1
            why = exited.exception() if exited in done else None
            _note(handle.log_path, "the runner's Ray actor or its node is gone"
                  + (f" ({type(why).__name__})" if why else ": its port stopped answering"))  # fmt: skip
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._pull_logs(handle), 2.0)
        handle.exit_code = code
        self._forget(runner.id)
        return code

    def exited(self, runner: Runner) -> bool:
        handle = self._handles.get(runner.id)
        return handle is None or handle.exit_code is not None

    def listening(self, runner: Runner) -> asyncio.Event | None:
        """Set once the runner's actor says its server listens."""
        handle = self._handles.get(runner.id)
        return handle.listening if handle is not None else None

    async def stop(self, runner: Runner, grace: float) -> None:
        handle = self._handles.get(runner.id)
        if handle is None:
            return
        with contextlib.suppress(Exception):
            # Bounded: an actor whose node is gone may never answer.
            await asyncio.wait_for(_future(handle.actor.stop.remote(grace)), grace + 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._pull_logs(handle), 2.0)
        self._forget(runner.id)

    def kill_all(self) -> None:
        for runner_id in list(self._handles):
            self._forget(runner_id)

    def describe(self) -> dict[str, Any]:
        """The cluster's nodes and resources, for `tidal doctor` (and every health
        check, hence read from Ray at most every DESCRIBE_SECONDS)."""
        now = time.monotonic()
        if self._described is None or now - self._described[0] >= DESCRIBE_SECONDS:
            self._described = (now, self._nodes())
        return {
            "namespace": self.namespace,
            "runners": len(self._handles),
            "nodes": self._described[1],
        }

    def _nodes(self) -> list[dict[str, Any]]:
        import ray

        return [
            {
                "node_id": n["NodeID"],
                "address": n["NodeManagerAddress"],
                "alive": bool(n["Alive"]),
                "resources": n.get("Resources", {}),
                "labels": {
                    k: v for k, v in (n.get("Labels") or {}).items() if not k.startswith("ray.io/")
                },
            }
            for n in ray.nodes()  # type: ignore[no-untyped-call]
        ]

    # -- helpers ---------------------------------------------------------------
    def _forget(self, runner_id: str) -> None:
        import ray

        handle = self._handles.pop(runner_id, None)
        if handle is not None and handle.heard is not None:
            handle.heard.cancel()
        if handle is not None:
            with contextlib.suppress(Exception):
                ray.kill(handle.actor, no_restart=True)

    async def _ship_logs(self, handle: _Handle) -> None:
        """Copy the runner's log from its node to the platform's, as it grows."""
        while True:
            with contextlib.suppress(Exception):
                await self._pull_logs(handle)
            await asyncio.sleep(LOG_POLL_SECONDS)

    async def _pull_logs(self, handle: _Handle) -> None:
        for name, path in (
            ("log", handle.log_path),
            ("requests", handle.log_path.with_suffix(".requests.jsonl")),
        ):
            while True:
                offset = handle.shipped.get(name, 0)
                chunk: bytes = await _future(handle.actor.read_log.remote(name, offset))
                if not chunk:
                    break
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("ab") as f:
                    f.write(chunk)
                handle.shipped[name] = offset + len(chunk)

    async def _watch_answers(self, runner: Runner) -> None:
        """Return when a runner that once accepted connections stops accepting them:
        its node may be gone before Ray's health checks say so."""
        from tidal.gateway.upstream import answers_http

        answered, failures = False, 0
        while True:
            await asyncio.sleep(1.0)
            if runner.address is None:
                continue
            if await answers_http(runner.address, timeout=1.0):
                answered, failures = True, 0
            elif answered:
                failures += 1
                if failures >= PROBE_FAILURES:
                    return


async def _hear_listening(handle: _Handle) -> None:
    """The actor answers when the runtime on its node says it listens; an actor that
    fails or whose runner ended first leaves the platform probing, as for any runner."""
    with contextlib.suppress(Exception):
        if await _future(handle.actor.listening.remote()):
            handle.listening.set()


def _future(ref: Any) -> asyncio.Future[Any]:
    """An asyncio future for a Ray ObjectRef (resolved on Ray's own thread)."""
    concurrent: Future[Any] = ref.future()
    return asyncio.wrap_future(concurrent)


def _zip_folder(folder: Path) -> bytes:
    """Every file under `folder`, deterministic (the digest keys each node's cache)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if "__pycache__" in path.parts:
                continue
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def _note(log_path: Path, line: str) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as f:
        f.write(f"tidal: {time.strftime('%H:%M:%S')} {line}\n")
