"""The docker backend: each runner is a container on a Docker engine (or Podman's
compatible API), started from the revision's image (tidal.images) with tidal's
runtime as its command.

Each container has its own network namespace; the runner's port is published on
a loopback host port the platform picks, so two runners of one exposed_port sit
side by side and the platform never sends traffic to bridge addresses. The code
bundle, /data, the file store and the runner's request log are bind-mounted;
secrets and the app's variables are environment variables (never labels).
`docker-init` (tini) is PID 1 and passes SIGTERM to the runtime's whole process
group, so a stop runs `teardown()` and stops a user's server like a local stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tidal.backends.base import Address, BackendUnavailable, Runner, RunnerLaunch
from tidal.backends.choice import DOCKER_HINT
from tidal.backends.output_signal import ListeningWatch
from tidal.config import PlatformConfig
from tidal.images.builder import ImageBuilder
from tidal.storage.files import FILES_DIR_ENV

OWNER_LABEL = "tidal.owner"
RUNNER_LABEL = "tidal.runner"
APP_LABEL = "tidal.app"
REVISION_LABEL = "tidal.revision"
BUNDLE_MOUNT = "/tidal/bundle"
DATA_MOUNT = "/data"
# An App's runtime serves here inside its container (exposed_port: the user's port).
APP_PORT = 8080
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
# Host variables that mean nothing inside an image (the platform's venv, its Python).
HOST_ONLY = frozenset({"PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "TIDAL_PLATFORM_PID"})


def engine_host(env: Mapping[str, str]) -> str:
    return env.get("DOCKER_HOST") or DEFAULT_SOCKET


def owner_id(data_dir: Path) -> str:
    """Which platform owns a container: one id per data directory."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]


def runner_labels(owner: str, launch: RunnerLaunch) -> dict[str, str]:
    return {
        OWNER_LABEL: owner,
        RUNNER_LABEL: launch.runner_id,
        APP_LABEL: launch.spec.name,
        REVISION_LABEL: str(launch.revision),
    }


def orphans(
    containers: Iterable[tuple[str, Mapping[str, str]]], owner: str, tracked: Iterable[str]
) -> list[str]:
    """Containers (id, labels) this platform started and no longer tracks; nothing else."""
    known = set(tracked)
    return [
        cid
        for cid, labels in containers
        if labels.get(OWNER_LABEL) == owner and labels.get(RUNNER_LABEL) not in known
    ]


def container_env(env: Mapping[str, str], gpu_count: int) -> dict[str, str]:
    """The runner's variables as the container needs them: host-only ones dropped, and
    CUDA_VISIBLE_DEVICES renumbered (the engine exposes only the runner's GPUs, as 0..n-1)."""
    out = {k: v for k, v in env.items() if k not in HOST_ONLY}
    out["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(gpu_count))
    out.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", TINI_KILL_PROCESS_GROUP="1")
    out["TIDAL_DATA_DIR"] = DATA_MOUNT
    return out


def bind_mounts(launch: RunnerLaunch, env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Host path -> {"bind": container path, "mode"}. The file store and the request log
    keep their host paths, so the variables naming them stay true inside."""
    mounts = {str(launch.bundle_dir): {"bind": BUNDLE_MOUNT, "mode": "ro"}}
    if launch.data_dir is not None:
        mounts[str(launch.data_dir)] = {"bind": DATA_MOUNT, "mode": "rw"}
    for name in (FILES_DIR_ENV, "TIDAL_REQUEST_LOG"):
        if path := env.get(name):
            mounts[path] = {"bind": path, "mode": "rw"}
    return mounts


# Processes and threads of one container (a fork bomb stays inside), as for local runners.
PIDS_LIMIT = 1024


def container_limits(launch: RunnerLaunch) -> dict[str, Any]:
    """The machine type's limits and no privilege beyond Docker's default set: no
    `privileged`, no added capabilities or devices (GPUs aside), no setuid gains."""
    limits: dict[str, Any] = {
        "privileged": False,
        "security_opt": ["no-new-privileges"],
        "pids_limit": PIDS_LIMIT,
    }
    if launch.cpus:
        limits["nano_cpus"] = int(launch.cpus * 1e9)
    if launch.memory_mb:
        limits["mem_limit"] = f"{launch.memory_mb}m"
        limits["memswap_limit"] = f"{launch.memory_mb}m"  # no swapping past it
    return limits


def _ping(host: str, timeout: float) -> str | None:
    """None if an engine answers at `host` within `timeout`, else why not."""
    url = urlparse(host)
    if url.scheme == "unix":
        if not Path(url.path).exists():
            return f"there is no Docker engine socket at {url.path}"
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(timeout)
                s.connect(url.path)
        except OSError as exc:
            return f"the Docker engine socket {url.path} does not answer ({exc})"
    import docker

    try:
        client = docker.DockerClient(base_url=host, timeout=max(1, int(timeout)))
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"the Docker engine at {host} does not answer ({type(exc).__name__}: {exc})"
    return None


def open_docker_backend(config: PlatformConfig, env: Mapping[str, str]) -> DockerBackend:
    host = engine_host(os.environ)
    try:
        # No socket: fails at once, before importing the SDK. An engine that is there may
        # be slow to answer its first call (Podman's API service on a busy host: > 1 s).
        problem = _ping(host, timeout=5.0)
    except ImportError:
        problem = "the docker SDK is not installed (`pip install docker`)"
    if problem:
        raise BackendUnavailable(f"{problem}. To fix: {DOCKER_HINT}")
    import docker

    client = docker.DockerClient(base_url=host, timeout=120)
    backend = DockerBackend(client, config.data_dir, env)
    with contextlib.suppress(Exception):  # a description only: never a reason to fail
        backend.engine = f"{engine_name(client.version())} at {host}"
    return backend


def engine_error(message: str) -> str:
    """An engine's refusal to create a runner's container, with the fix where known."""
    if "container-init binary not found" in message or "catatonit" in message:
        return (
            "Podman has no init binary for the container (catatonit), which the runner's "
            "graceful stop needs: install the `catatonit` package on the engine's host "
            f"({message})"
        )
    if "could not select device driver" in message and "gpu" in message:
        return (
            "the engine cannot give containers GPUs: install the NVIDIA Container Toolkit "
            f"on the engine's host and restart the engine ({message})"
        )
    return message


def engine_name(version: Mapping[str, Any]) -> str:
    """ "Docker Engine 24.0.7" or "Podman Engine 4.3.1", from the engine's /version."""
    names = [str(c.get("Name", "")) for c in version.get("Components") or []]
    name = next((n for n in names if n.endswith("Engine")), "Engine")
    if name == "Engine":
        name = "Docker Engine"
    return f"{name} {version.get('Version', '?')}"


@dataclass
class _Tracked:
    container: Any  # docker.models.containers.Container
    exited: asyncio.Future[int]
    # Set when the runtime's listening line shows in the container's log stream.
    listening: asyncio.Event


class DockerBackend:
    name = "docker"
    own_placement = False

    def __init__(self, client: Any, data_dir: Path, env: Mapping[str, str]) -> None:
        self.client = client  # docker.DockerClient
        self.owner = owner_id(data_dir)
        self.images = ImageBuilder(client, data_dir)
        self._env = dict(env)  # for every runner: the file store and the platform's URL
        self._tracked: dict[str, _Tracked] = {}
        self.engine = "Docker Engine"  # which engine answers, for health and doctor

    def can_share_port(self) -> bool:
        return True  # each container has its own network namespace

    def _owned(self) -> list[tuple[str, Mapping[str, str]]]:
        # sparse: one request, no per-container inspect racing with removals
        listing = self.client.containers.list(all=True, sparse=True, filters={"label": OWNER_LABEL})
        return [(c.id, c.attrs.get("Labels") or {}) for c in listing]

    def reap_orphans(self) -> int:
        """Remove containers of this platform (its data directory) that it doesn't track:
        what a crashed platform left. Other platforms' and users' containers are left."""
        reaped = 0
        for cid in orphans(self._owned(), self.owner, self._tracked):
            with contextlib.suppress(Exception):
                self.client.containers.get(cid).remove(force=True)
                reaped += 1
        return reaped

    async def start(self, runner: Runner, launch: RunnerLaunch) -> None:
        spec = launch.spec
        if not spec.image_ref:
            raise RuntimeError(f"revision {launch.revision} of {spec.name} has no built image")
        port = spec.options.exposed_port or APP_PORT
        env = {**self._env, **launch.env}
        request_log = env.get("TIDAL_REQUEST_LOG")
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        if request_log:  # a file bind-mount needs the file to exist
            Path(request_log).touch()
        if launch.data_dir is not None:
            launch.data_dir.mkdir(parents=True, exist_ok=True)
        gpus = len(launch.gpu_ids) or launch.num_gpus
        volumes = bind_mounts(launch, env)
        kwargs: dict[str, Any] = dict(
            image=spec.image_ref,
            entrypoint=["python3", "-m", "tidal.runtime"],
            command=[
                "--bundle",
                BUNDLE_MOUNT,
                "--entry",
                spec.entry,
                "--port",
                str(port),
                "--host",
                "0.0.0.0",
            ],
            working_dir=BUNDLE_MOUNT,
            environment=container_env(env, gpus),
            volumes=volumes,
            # The engine picks a free loopback port as it binds it (no race with
            # another process for a port chosen beforehand); read back below.
            ports={f"{port}/tcp": ("127.0.0.1",)},
            labels=runner_labels(self.owner, launch),
            name=f"tidal-{launch.runner_id}",
            init=True,
            detach=True,
        )
        if spec.kind == "image":  # the image's own ENTRYPOINT, CMD and WORKDIR; no code
            for key in ("entrypoint", "command", "working_dir"):
                del kwargs[key]
            volumes.pop(str(launch.bundle_dir), None)
        kwargs.update(container_limits(launch))
        if gpus:
            from docker.types import DeviceRequest

            ids = list(launch.gpu_ids)
            kwargs["device_requests"] = [
                DeviceRequest(device_ids=ids, capabilities=[["gpu"]])
                if ids
                else DeviceRequest(count=gpus, capabilities=[["gpu"]])
            ]
        try:
            container = await asyncio.to_thread(self.client.containers.run, **kwargs)
        except Exception as exc:
            raise RuntimeError(engine_error(str(exc))) from None
        loop = asyncio.get_running_loop()
        tracked = _Tracked(container, loop.create_future(), asyncio.Event())
        self._tracked[launch.runner_id] = tracked
        threading.Thread(
            target=self._follow, args=(tracked, launch.log_path, loop),
            name=f"tidal-docker-{launch.runner_id}", daemon=True,
        ).start()  # fmt: skip
        # A container that already died has no port: it fails here, its log kept and
        # the container removed by _follow.
        host_port = await asyncio.to_thread(_published_port, container, port)
        runner.address = Address("127.0.0.1", host_port)

    def _follow(self, tracked: _Tracked, log_path: Path, loop: asyncio.AbstractEventLoop) -> None:
        """Copy the container's output into the runner's log until it exits, hearing
        the runtime say its server listens on the way; then report its exit status
        and remove it."""
        container = tracked.container
        watch = ListeningWatch()
        with contextlib.suppress(Exception), log_path.open("ab") as log:
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                if watch.feed(chunk):
                    with contextlib.suppress(RuntimeError):  # the loop is gone
                        loop.call_soon_threadsafe(tracked.listening.set)
                log.write(chunk)
                log.flush()
        code = 137
        with contextlib.suppress(Exception):
            code = int(container.wait(timeout=3600).get("StatusCode", 137))
        with contextlib.suppress(Exception):
            container.remove(force=True)

        def done() -> None:
            if not tracked.exited.done():
                tracked.exited.set_result(code)

        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(done)

    async def wait_exit(self, runner: Runner) -> int:
        tracked = self._tracked[runner.id]
        try:
            return await asyncio.shield(tracked.exited)
        finally:
            if tracked.exited.done():
                self._tracked.pop(runner.id, None)

    def exited(self, runner: Runner) -> bool:
        tracked = self._tracked.get(runner.id)
        return tracked is None or tracked.exited.done()

    def listening(self, runner: Runner) -> asyncio.Event | None:
        """Set once the runner's output says its server listens (the engine's log
        stream is the one line the platform has to a container)."""
        tracked = self._tracked.get(runner.id)
        return tracked.listening if tracked is not None else None

    async def stop(self, runner: Runner, grace: float) -> None:
        tracked = self._tracked.get(runner.id)
        if tracked is None or tracked.exited.done():
            return
        container = tracked.container
        try:
            # The engine sends SIGTERM, waits `grace`, then kills.
            await asyncio.to_thread(container.stop, timeout=max(1, round(grace)))
        except Exception:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(container.kill)
        finally:
            if not tracked.exited.done():
                with contextlib.suppress(Exception):
                    container.kill()

    def kill_all(self) -> None:
        for tracked in list(self._tracked.values()):
            with contextlib.suppress(Exception):
                tracked.container.remove(force=True)


def _published_port(container: Any, port: int) -> int:
    """The loopback port the engine bound for the container's `port`."""
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{port}/tcp") or []
    for binding in bindings:
        if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
            return int(binding["HostPort"])
    raise RuntimeError(f"the engine published no loopback port for the container's port {port}")
