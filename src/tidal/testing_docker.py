"""A throwaway Docker engine for tests and benchmarks: Debian's `dockerd` with its own
socket, data root and pid file under a temp dir, and a base image with Python built
from `debootstrap` (no container registry is reachable in CI). Everything it started
is stopped at the end. Users' own tests can use it too.

`python -m tidal.testing_docker` starts one and waits (Ctrl-C stops it): handy by hand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BASE_IMAGE = "tidal-test/debian-python:bookworm"
# The rootfs tarball is cached between local runs; CI starts from nothing.
CACHE = Path(os.environ.get("TIDAL_TEST_CACHE", Path.home() / ".cache" / "tidal-test"))


class DockerUnavailable(RuntimeError):
    pass


@dataclass
class DockerEngine:
    root: Path
    host: str  # what DOCKER_HOST takes: unix:///.../docker.sock

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host}

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the `docker` CLI against this engine (debugging aid for tests)."""
        return subprocess.run(
            ["docker", "--host", self.host, *args],
            capture_output=True, text=True, check=check, timeout=300,
        )  # fmt: skip


def _require(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if found is None:
        raise DockerUnavailable(
            f"`{binary}` is not installed; install Debian's `{package}` package "
            "(`make system-deps` does, as root)"
        )
    return found


def _answers(sock_path: str) -> bool:
    """Whether the engine answers `GET /_ping` on its unix socket (no SDK: no leaks)."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(sock_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in s.recv(64)
    except OSError:
        return False


def _wait_ready(host: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DockerUnavailable(f"dockerd exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if _answers(host.removeprefix("unix://")):
            return
        time.sleep(0.2)
    raise DockerUnavailable(f"dockerd did not answer in {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def base_rootfs() -> Path:
    """A tarball of Debian bookworm (minbase) with python3, from debootstrap; cached."""
    tarball = CACHE / "debian-python-bookworm.tar"
    if tarball.is_file():
        return tarball
    debootstrap = _require("debootstrap", "debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tidal-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        done = subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3", "bookworm", str(rootfs)],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if done.returncode != 0:
            raise DockerUnavailable(f"debootstrap failed:\n{(done.stdout + done.stderr)[-3000:]}")
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.replace(tarball)
    return tarball


def import_base_image(engine: DockerEngine) -> None:
    if engine.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return
    with base_rootfs().open("rb") as tar:
        subprocess.run(
            ["docker", "--host", engine.host, "import", "-", BASE_IMAGE],
            stdin=tar, capture_output=True, check=True, timeout=300,
        )  # fmt: skip


@contextlib.contextmanager
def docker_engine(base_image: bool = True) -> Iterator[DockerEngine]:
    """Start dockerd (as root) on a private socket; stop it and its containers at the end."""
    dockerd = _require("dockerd", "docker.io")
    _require("docker", "docker.io")
    if os.geteuid() != 0:
        raise DockerUnavailable("starting dockerd needs root; run the docker tests as root")
    # A short path: unix socket paths are limited to 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="tidal-docker-", dir="/tmp"))
    host = f"unix://{root}/docker.sock"
    log = root / "dockerd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [dockerd, "--host", host, "--data-root", str(root / "data"),
             "--exec-root", str(root / "exec"), "--pidfile", str(root / "docker.pid")],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    engine = DockerEngine(root, host)
    try:
        _wait_ready(host, proc, log, timeout=60)
        if base_image:
            import_base_image(engine)
        yield engine
    finally:
        with contextlib.suppress(Exception):
            ids = engine.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                engine.docker("rm", "-f", *ids, check=False)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    with docker_engine() as running:
        print(f"export DOCKER_HOST={running.host}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
