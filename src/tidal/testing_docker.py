"""A throwaway Docker engine for tests and benchmarks: Debian's `dockerd` with its own
socket, data root and pid file under a temp dir, and a base image with Python built
from `debootstrap` (no container registry is reachable in CI). Everything it started
is stopped at the end. Users' own tests can use it too.

`podman_engine()` is the same for Podman's Docker-compatible API (`podman system
service`), with its own storage and configuration under a temp dir.

`python -m tidal.testing_docker [podman]` starts one and waits (Ctrl-C stops it).
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tidal.testing import stop_process

BASE_IMAGE = "tidal-test/debian-python:bookworm"
# The rootfs tarball is cached between local runs; CI starts from nothing.
CACHE = Path(os.environ.get("TIDAL_TEST_CACHE", Path.home() / ".cache" / "tidal-test"))


class DockerUnavailable(RuntimeError):
    pass


@dataclass
class DockerEngine:
    root: Path
    host: str  # what DOCKER_HOST takes: unix:///.../docker.sock
    kind: str = "docker"  # or "podman"

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
    name = Path(str(proc.args[0])).name  # type: ignore[index]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DockerUnavailable(f"{name} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if _answers(host.removeprefix("unix://")):
            return
        time.sleep(0.2)
    raise DockerUnavailable(f"{name} did not answer in {timeout:.0f}s:\n{log.read_text()[-3000:]}")


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
def _engine(
    argv: list[str], engine: DockerEngine, env: Mapping[str, str] | None, base_image: bool
) -> Iterator[DockerEngine]:
    """Run an engine's daemon until the end of the block; then remove every container
    it has (with the docker CLI, which speaks to both engines), stop it and delete
    its folder."""
    log = engine.root / f"{engine.kind}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        _wait_ready(engine.host, proc, log, timeout=60)
        if base_image:
            import_base_image(engine)
        yield engine
    finally:
        with contextlib.suppress(Exception):
            ids = engine.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                engine.docker("rm", "-f", *ids, check=False)
        stop_process(proc)


@contextlib.contextmanager
def docker_engine(base_image: bool = True) -> Iterator[DockerEngine]:
    """Start dockerd (as root) on a private socket; stop it and its containers at the end."""
    dockerd = _require("dockerd", "docker.io")
    _require("docker", "docker.io")
    if os.geteuid() != 0:
        raise DockerUnavailable("starting dockerd needs root; run the docker tests as root")
    # A short path: unix socket paths are limited to 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="tidal-docker-", dir="/tmp"))
    engine = DockerEngine(root, f"unix://{root}/docker.sock")
    argv = [dockerd, "--host", engine.host, "--data-root", str(root / "data"),
            "--exec-root", str(root / "exec"), "--pidfile", str(root / "docker.pid")]  # fmt: skip
    try:
        with _engine(argv, engine, None, base_image):
            yield engine
    finally:
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


# Root in this workplace lacks CAP_SYS_RESOURCE, so Podman's default ulimits (raised
# to the hard limit) fail; these fit under any hard limit we have met.
PODMAN_CONF = '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'


@contextlib.contextmanager
def podman_engine(base_image: bool = True) -> Iterator[DockerEngine]:
    """Start `podman system service` on a private socket, storage and configuration; at
    the end remove its containers (conmon keeps them alive past the service) and its
    storage."""
    podman = _require("podman", "podman")
    _require("catatonit", "catatonit")  # what Podman runs for `init=True`
    _require("docker", "docker.io")  # the CLI this module drives engines with
    if os.geteuid() != 0:
        raise DockerUnavailable("the podman tests run rootful Podman: run them as root")
    root = Path(tempfile.mkdtemp(prefix="tidal-podman-", dir="/tmp"))
    (root / "containers.conf").write_text(PODMAN_CONF)
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\nrunroot = "{root}/run"\ngraphroot = "{root}/data"\n'
    )
    # Registries on loopback speak plain HTTP, as Docker allows for 127.0.0.0/8 by
    # default (the prefix matches any port in Podman 4).
    (root / "registries.conf").write_text('[[registry]]\nlocation = "127.0.0.1"\ninsecure = true\n')
    env = {**os.environ, "CONTAINERS_CONF": str(root / "containers.conf"),
           "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
           "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf")}  # fmt: skip
    engine = DockerEngine(root, f"unix://{root}/podman.sock", kind="podman")
    try:
        with _engine([podman, "system", "service", "--time=0", engine.host], engine, env,
                     base_image):  # fmt: skip
            yield engine
    finally:
        with contextlib.suppress(Exception):
            subprocess.run([podman, "system", "reset", "--force"], env=env,
                           capture_output=True, timeout=120, check=False)  # fmt: skip
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    import sys

    start = podman_engine if sys.argv[1:] == ["podman"] else docker_engine
    with start() as running:
        print(f"export DOCKER_HOST={running.host}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
