"""What runs inside each runner's Ray actor, on the node Ray chose: unpack the code
bundle, build or reuse the app's environment, start `tidal.runtime` as a child
process, and report where it listens. Nothing here is on the data path: the
gateway talks to the runner over HTTP.

This module must not import ray at the top: it is imported by the actor's worker
process (where ray is loaded anyway) and by the platform only through ray.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidal.backends.runner_line import RunnerLine
from tidal.environments import Environment, Environments, runner_setup
from tidal.runtime import channel
from tidal.storage.bundles import store_bundle

LOG_CHUNK = 1 << 20  # the most log bytes one read_log call returns


@dataclass(frozen=True)
class RunnerOrder:
    """What the platform sends the actor (plain values: pickled across the cluster)."""

    runner_id: str
    digest: str
    entry: str
    env: dict[str, str]
    requirements: list[str]
    python_version: str | None
    exposed_port: int | None
    host: str | None  # None: the node's IP
    node_dir: str | None  # None: TMPDIR/tidal-ray
    bundle_limit: int


class RunnerActor:
    """One runner: owns its process group for the actor's whole life. The runtime
    gets SIGHUP (PDEATHSIG) if this actor's process dies, so nothing outlives it."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._logs: dict[str, Path] = {}
        self._line: RunnerLine | None = None  # the runtime's control line

    async def launch(self, order: RunnerOrder, bundle: bytes) -> dict[str, Any]:
        import ray

        context = ray.get_runtime_context()
        node_id = context.get_node_id()
        # Per logical node: several nodes on one machine (tests) keep separate caches.
        root = Path(order.node_dir or Path(tempfile.gettempdir()) / "tidal-ray") / node_id[:16]
        bundle_dir = await asyncio.to_thread(
            store_bundle, root / "bundles", order.digest, bundle, order.bundle_limit
        )
        environment: Environment | None = None
        if order.requirements or order.python_version:
            # Built once per node and reused, like the platform's own (same code path).
            async for item in Environments(root).ensure(order.requirements, order.python_version):
                if isinstance(item, Environment):
                    environment = item
        python, env_vars = runner_setup(root, environment)
        if environment is None:
            python = Path(sys.executable)  # the node's tidal installation, not the platform's
        host = order.host or ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        port = order.exposed_port or _free_port(host)
        gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        logs = root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self._logs = {
            "log": logs / f"{order.runner_id}.log",
            "requests": logs / f"{order.runner_id}.requests.jsonl",
        }
        env = {
            **os.environ,
            **order.env,
            **env_vars,
            "PYTHONUNBUFFERED": "1",
            # Ray's GPU assignment, not the platform's (it placed nothing).
            "CUDA_VISIBLE_DEVICES": ",".join(gpu_ids),
            "TIDAL_REQUEST_LOG": str(self._logs["requests"]),
            # The runtime stops with its parent: this actor, not the platform.
            "TIDAL_PLATFORM_PID": str(os.getpid()),
        }
        data_dir = root / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(python), "-m", "tidal.runtime", "--bundle", str(bundle_dir),
            "--entry", order.entry, "--port", str(port), "--host", host,
            "--data-dir", str(data_dir),
        ]  # fmt: skip
        actor_end, runner_end = channel.pair()
        try:
            with self._logs["log"].open("ab") as log:
                # Forked from the actor's event-loop thread, which lives as long as the
                # actor: PDEATHSIG follows the thread that forked, not the process.
                self._proc = subprocess.Popen(
                    [*cmd, "--control-fd", str(runner_end.fileno())],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=bundle_dir, env=env, start_new_session=True,
                    pass_fds=(runner_end.fileno(),),
                )  # fmt: skip
        except BaseException:
            actor_end.close()
            raise
        finally:
            runner_end.close()
        self._line = RunnerLine(actor_end)
        return {
            "host": host,
            "port": port,
            "pid": self._proc.pid,
            "gpu_ids": gpu_ids,
            "node_id": node_id,
        }

    async def listening(self) -> bool:
        """Resolves once the runtime says its server listens (True), or once it
        ended without saying so (False): what the platform waits on, not a probe."""
        return self._line is not None and await self._line.heard_listening()

    async def wait(self) -> int:
        proc = self._proc
        if proc is None:
            return -1
        code = await asyncio.to_thread(proc.wait)
        _killpg(proc.pid, signal.SIGKILL)  # the user's server may outlive the runtime
        if self._line is not None:
            self._line.close()
        return code

    async def stop(self, grace: float) -> int | None:
        """SIGTERM the runner's group (teardown runs), SIGKILL after `grace` seconds."""
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            _killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, grace)
        _killpg(proc.pid, signal.SIGKILL)
        return proc.poll()

    async def read_log(self, name: str, offset: int) -> bytes:
        """The runner's output from `offset` on, for the platform's copy of its log."""
        path = self._logs.get(name)
        if path is None or not path.exists():
            return b""
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(LOG_CHUNK)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
