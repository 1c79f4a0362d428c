"""Test helpers shipped with the product: a real platform process on a free
loopback port, and a CLI runner pointed at it. Users' own tests can use them too."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx

from tidal.backends.local import free_port
from tidal.config import PlatformConfig

if TYPE_CHECKING:
    from tidal.server import Platform

T = TypeVar("T")


@dataclass
class PlatformProcess:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    # The CA that signed the platform's TLS certificate (https platforms only).
    ca_file: Path | None = None

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What httpx's `verify=` needs to trust this platform."""
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True

    def cli(
        self,
        *args: str,
        cwd: Path | None = None,
        check: bool = True,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `tidal ARGS` against this platform, as a user would from a shell."""
        env = {
            **os.environ,
            "TIDAL_URL": self.url,
            **({"SSL_CERT_FILE": str(self.ca_file)} if self.ca_file else {}),
            "COLUMNS": "200",
            "NO_COLOR": "1",
            **(env or {}),
        }
        done = subprocess.run(
            [sys.executable, "-m", "tidal", *args],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"tidal {' '.join(args)} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    def http(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout, verify=self.verify)

    def runner_pids(self) -> list[int]:
        return [int(p.read_text()) for p in (self.data_dir / "runners").glob("*.pid")]

    def host_pid(self, runner_id: str, pid: int) -> int:
        """The host's pid of a process that runner `runner_id` sees as `pid` (a sandboxed
        runner has its own PID namespace): for tests that signal or watch it."""
        top = int((self.data_dir / "runners" / f"{runner_id}.pid").read_text())
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                lines = status.read_text().splitlines()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in lines if ":" in line)
            nspids = [int(p) for p in fields.get("NSpid", "").split()]
            if nspids and nspids[-1] == pid and _descends(nspids[0], top):
                return nspids[0]
        raise LookupError(f"runner {runner_id} has no process {pid}")


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent, after the name
    return False


def wait_for(
    check: Callable[[], T], timeout: float = 30, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal a process (platform, engine daemon), give it 30 s to exit, then kill it."""
    proc.send_signal(sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def start_platform(
    data_dir: Path,
    extra_args: Sequence[str] = (),
    auth: bool = False,
    tls_ca: Path | None = None,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[PlatformProcess]:
    """Start `tidal server` on a free port; stop it (and so its runners) on exit.
    `database_url`: the control plane's database (default: SQLite in `data_dir`).

    `env`: variables added to the platform's environment (e.g. DOCKER_HOST).

    `tls_ca`: the platform serves https (its TOML or `extra_args` name the certificate),
    and this CA, which signed it, is what the health check, `cli()` and `http()` trust."""
    port = free_port()
    log_path = data_dir / "platform.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tidal", "server", "--port", str(port),
             "--data-dir", str(data_dir), *([] if auth else ["--no-auth"]),
             *(["--database-url", database_url] if database_url else []), *extra_args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            # Its own session: a Ctrl-C at the terminal must not reach it as well as
            # our SIGINT below (uvicorn takes a second SIGINT as "exit now").
            start_new_session=True,
        )  # fmt: skip
    scheme = "https" if tls_ca else "http"
    running = PlatformProcess(f"{scheme}://127.0.0.1:{port}", data_dir, process, log_path, tls_ca)
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the platform exited: {log_path.read_text()}")
            try:
                health = httpx.get(f"{running.url}/api/v1/health", timeout=1, verify=running.verify)
                return health.status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=30, what="the platform to answer")
        yield running
    finally:
        stop_process(process, signal.SIGINT)


@contextlib.contextmanager
def platform_in_thread(config: PlatformConfig) -> Iterator[Platform]:
    """Run a Platform in this process (its own thread and event loop) on config.port."""
    import threading

    import uvicorn

    from tidal.server import Platform, uvicorn_config

    platform = Platform(config)
    server = uvicorn.Server(uvicorn_config(platform))
    thread = threading.Thread(target=server.run, name="tidal-platform", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=30, what="the platform")
        if not server.started:
            raise RuntimeError("the in-process platform failed to start")
        yield platform
    finally:
        server.should_exit = True
        thread.join(60)
