"""Start processes inside an app's sandbox (bubblewrap, then setpriv to the app's uid).

`Sandbox.prepare` is pure bookkeeping plus the runner's cgroup: it returns the
argv prefix, the environment and the cgroup. `Sandbox.spawn` starts a command
there: bubblewrap reports the sandbox's first process and waits (`--block-fd`)
until the platform has put it in the cgroup and given it its way out, so not one
instruction of the app runs unconfined.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import IO

import tidal
from tidal.sandbox import egress as egress_mod
from tidal.sandbox import owners
from tidal.sandbox.cgroups import CgroupError, CgroupTree, RunnerCgroup
from tidal.sandbox.environment import runner_environment
from tidal.sandbox.limits import Limits
from tidal.sandbox.mounts import Bind, bwrap_mounts
from tidal.sandbox.uids import UidAllocator

HOME = "/tmp"  # the runner's only writable folder besides /data
DATA_MOUNT = "/data"
GPU_SHARED_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot be built on this host; the message says why and what to do."""


@dataclass(frozen=True)
class SandboxSettings:
    uid_first: int = 700_000
    uid_count: int = 65_536
    pids_max: int = 1024
    startup_cpus: float = 2.0  # a starting runner's CPU quota, until it answers
    egress_subnet: str = "100.72.0.0/16"

    @property
    def data_gid(self) -> int:
        """The group of /data, which every app's uid is in: the one below the range."""
        return self.uid_first - 1


@dataclass
class Prepared:
    """What runs a process inside one runner's sandbox."""

    runner_id: str
    uid: int
    argv: list[str]  # append the command to run
    env: dict[str, str]
    cgroup: RunnerCgroup
    egress: str
    cwd: Path


@dataclass(frozen=True)
class SandboxRequest:
    """What one app's runner sandboxes are built from, besides the runner's own values
    (its id, port, request log): equal requests make interchangeable sandboxes."""

    app: str
    python: Path
    limits: Limits
    egress: str = "none"
    data_dir: Path | None = None
    files_dir: Path | None = None
    read_only: tuple[Path, ...] = ()
    gpu_ids: tuple[str, ...] = ()


@dataclass
class SandboxedProcess:
    prepared: Prepared
    process: asyncio.subprocess.Process  # bubblewrap, outside the sandbox
    init_pid: int  # the sandbox's first process, as the host sees it: its namespaces
    veth: str | None = None
    ended: bool = field(default=False)


def _traversable(folder: str) -> bool:
    try:
        return bool(os.stat(folder).st_mode & 0o001)
    except OSError:
        return True  # not there: nothing to hide


def _installation_paths(python: Path) -> list[Path]:
    """What a runner's interpreter and tidal's runtime are read from."""
    paths = [Path(sys.prefix), Path(tidal.__file__).resolve().parent.parent]
    real = Path(os.path.realpath(python))
    paths.append(real.parent.parent)  # e.g. /usr for /usr/bin/python3.11
    if python.parent.parent != real.parent.parent:
        paths.append(python.parent.parent)  # a venv's own folder
    return paths


def _gpu_devices(gpu_ids: Sequence[str]) -> list[Bind]:
    numbers = [g for g in gpu_ids if g.isdigit()]
    if not numbers:
        return []
    names = [f"nvidia{n}" for n in numbers] + list(GPU_SHARED_DEVICES)
    return [Bind(f"/dev/{n}", f"/dev/{n}", "dev") for n in names if Path(f"/dev/{n}").exists()]


def platform_name(data_dir: Path) -> str:
    return sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


class Sandbox:
    def __init__(self, data_dir: Path, settings: SandboxSettings | None = None) -> None:
        self.data_dir = data_dir
        self.settings = settings or SandboxSettings()
        self.uids = UidAllocator(
            data_dir / "sandbox", self.settings.uid_first, self.settings.uid_count
        )
        self.cgroups: CgroupTree | None = None
        self.bwrap_version = ""
        # bubblewrap processes whose sandbox is still being built (pid = process group):
        # a stop in that window must end them, since the inner bubblewrap waits for the
        # outer one before --die-with-parent applies to it.
        self._building: set[int] = set()
        self._closed = False  # no sandbox is built after the platform's stop began
        # Names this process's cgroup folders and firewall rules (tidal.sandbox.owners).
        self.owner = owners.this_process(platform_name(data_dir))

    # -- can it be built here --------------------------------------------------------

    def check(self) -> None:
        """Raise SandboxUnavailable (one paragraph: what is missing, how to fix it)."""
        fix = (
            "Local runners run only inside the sandbox; fix this, or start the platform "
            "with `tidal server --sandbox off` to run apps unconfined (trusted code only)."
        )
        if not sys.platform.startswith("linux"):
            raise SandboxUnavailable(
                f"the runner sandbox needs Linux (this is {sys.platform}). {fix}"
            )
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "the runner sandbox needs the platform to run as root (to give each app its "
                f"own uid, cgroups and network), and this platform runs as uid {os.geteuid()}. {fix}"
            )
        for tool, package in (
            ("bwrap", "bubblewrap"),
            ("setpriv", "util-linux"),
            ("ip", "iproute2"),
        ):
            if shutil.which(tool) is None:
                raise SandboxUnavailable(
                    f"the runner sandbox needs `{tool}`, which is not installed; install the "
                    f"Debian package {package} (apt-get install {package}). {fix}"
                )
        try:
            self.cgroups = CgroupTree.open(self.owner.name)
        except CgroupError as exc:
            raise SandboxUnavailable(
                f"the runner sandbox cannot set cgroup limits: {exc.strerror or exc}. "
                f"Mount the cpu, memory and pids controllers (cgroup v2, or v1). {fix}"
            ) from None
        probe = subprocess.run(
            ["bwrap", *self._namespaces(), "--ro-bind", "/", "/", "--proc", "/proc",
             "--dev", "/dev", "--", "true"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if probe.returncode != 0:
            raise SandboxUnavailable(
                "bubblewrap could not build a sandbox here: "
                f"{probe.stderr.strip() or f'status {probe.returncode}'} (namespaces may be off "
                f"in this kernel or container). {fix}"
            )
        version = subprocess.run(["bwrap", "--version"], capture_output=True, text=True)
        self.bwrap_version = version.stdout.strip()
        # Only root passes through DATA_DIR: keys, database, bundles and logs stay out of
        # reach even of a process that left its sandbox's mounts.
        self.data_dir.chmod(0o700)
        # Runners bind /data at the host's /data, which must exist as a mount point.
        Path(DATA_MOUNT).mkdir(exist_ok=True)

    def describe(self) -> str:
        cgroups = self.cgroups.versions if self.cgroups else "no cgroups"
        last = self.settings.uid_first + self.settings.uid_count - 1
        return (
            f"{self.bwrap_version or 'bubblewrap'}: a uid per app ({self.settings.uid_first}-"
            f"{last}), no capabilities, private mounts, PIDs and network; cgroup {cgroups}"
        )

    # -- one runner ------------------------------------------------------------------

    @staticmethod
    def _namespaces() -> list[str]:
        return ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
                "--unshare-cgroup-try", "--die-with-parent"]  # fmt: skip

    def writable_file(self, path: Path, uid: int) -> None:
        """A file the runner writes (its request log): made its own."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        os.chown(path, uid, uid)
        path.chmod(0o600)

    def shared_folder(self, path: Path, mode: int, gid: int = 0) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, 0, gid)
        path.chmod(mode)

    def prepare(
        self,
        *,
        app: str,
        runner_id: str,
        bundle_dir: Path,
        python: Path,
        runner_vars: Mapping[str, str],
        limits: Limits,
        egress: str = "none",
        data_dir: Path | None = None,
        files_dir: Path | None = None,
        writable_files: Sequence[Path] = (),
        read_only: Sequence[Path] = (),
        gpu_ids: Sequence[str] = (),
    ) -> Prepared:
        if self.cgroups is None:
            raise SandboxUnavailable("the sandbox was not checked (Sandbox.check) before use")
        if egress not in egress_mod.EGRESS_CHOICES:
            raise ValueError(f"egress must be one of {egress_mod.EGRESS_CHOICES}, not {egress!r}")
        uid = self.uids.uid_for(app)
        binds = [Bind(str(p), str(p)) for p in (*_installation_paths(python), *read_only)]
        bundle_dir.chmod(0o755)  # unpacked in a private staging folder (mkdtemp: 0700)
        binds.append(Bind(str(bundle_dir), str(bundle_dir)))
        if data_dir is not None:
            # Shared by every app, as /data always was: each app's uid is in its group,
            # new files inherit the group (setgid) and are group-writable (umask 002).
            self.shared_folder(data_dir, 0o2775, self.settings.data_gid)
            binds.append(Bind(str(data_dir), DATA_MOUNT, "rw"))
        if files_dir is not None:
            self.shared_folder(files_dir, 0o1733)  # files by unguessable id; no listing
            binds.append(Bind(str(files_dir), str(files_dir), "rw"))
        for path in writable_files:
            self.writable_file(path, uid)
            binds.append(Bind(str(path), str(path), "rw"))
        binds += _gpu_devices(gpu_ids)
        mounts = bwrap_mounts(binds, hidden=[str(self.data_dir)], traversable=_traversable)
        argv = [
            "bwrap", *self._namespaces(), *mounts,
            "--perms", "1777", "--tmpfs", "/dev/shm",
            "--hostname", "tidal-runner", "--chdir", str(bundle_dir),
            "--",
            # What an app writes in /data, the other apps may change (uvloop's spawn has
            # no umask argument, bubblewrap 0.8 no --umask).
            "/bin/sh", "-c", 'umask 002 && exec "$@"', "sh",
            "setpriv", f"--reuid={uid}", f"--regid={uid}", f"--groups={self.settings.data_gid}",
            "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs",
            "--",
        ]  # fmt: skip
        env = self.environment(runner_vars)
        cgroup = self.cgroups.create(runner_id, limits.starting(self.settings.startup_cpus))
        return Prepared(runner_id, uid, argv, env, cgroup, egress, bundle_dir)

    @staticmethod
    def environment(runner_vars: Mapping[str, str]) -> dict[str, str]:
        """A sandboxed runner's whole environment."""
        return runner_environment(
            os.environ, {**runner_vars, "TIDAL_DATA_DIR": DATA_MOUNT}, home=HOME
        )

    async def spawn(
        self,
        prepared: Prepared,
        command: Sequence[str],
        log: IO[bytes],
        pass_fds: Sequence[int] = (),
    ) -> SandboxedProcess:
        """Start `command` in the prepared sandbox; output goes to `log`. `pass_fds`
        (the runner's control line) reach it: neither bubblewrap nor setpriv close them."""
        if self._closed:
            prepared.cgroup.remove()
            raise RuntimeError("the platform is stopping: no new sandbox")
        info_read, info_write = os.pipe()
        block_read, block_write = os.pipe()
        argv = [prepared.argv[0], "--info-fd", str(info_write), "--block-fd", str(block_read),
                *prepared.argv[1:], *command]  # fmt: skip
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=prepared.env,
                pass_fds=(info_write, block_read, *pass_fds),
                start_new_session=True,
            )
        except BaseException:
            os.close(info_read)
            os.close(block_write)
            prepared.cgroup.remove()
            raise
        finally:
            os.close(info_write)
            os.close(block_read)
        self._building.add(process.pid)
        try:
            if self._closed:  # the stop came while bubblewrap was being started
                raise RuntimeError("the platform is stopping: no new sandbox")
            info = await _read_info(info_read)
            if info is None:
                await process.wait()
                raise RuntimeError(
                    f"bubblewrap exited with status {process.returncode} before the sandbox "
                    "was built (its message is in the runner's log)"
                )
            sandboxed = SandboxedProcess(prepared, process, int(info["child-pid"]))
            prepared.cgroup.add(sandboxed.init_pid)
            if prepared.egress == "internet":
                sandboxed.veth = await asyncio.get_running_loop().run_in_executor(
                    None,
                    egress_mod.connect,
                    sandboxed.init_pid,
                    prepared.runner_id,
                    self.settings.egress_subnet,
                    self.owner.name,
                )
            os.write(block_write, b"go")
        except BaseException:
            _kill(process.pid)
            prepared.cgroup.remove()
            raise
        finally:
            self._building.discard(process.pid)
            os.close(info_read)
            os.close(block_write)
        return sandboxed

    def terminate(self, sandboxed: SandboxedProcess) -> None:
        """Ask every process of the runner to stop (the sandbox's init ignores it)."""
        sandboxed.prepared.cgroup.signal_all(signal.SIGTERM)

    def kill(self, sandboxed: SandboxedProcess) -> None:
        """Nothing of the runner survives: its PID namespace ends with its init."""
        _kill(sandboxed.init_pid, group=False)
        _kill(sandboxed.process.pid)
        sandboxed.prepared.cgroup.kill()

    def release(self, sandboxed: SandboxedProcess) -> None:
        """After the runner exited: its cgroup and way out go."""
        self.kill(sandboxed)
        sandboxed.prepared.cgroup.remove()
        if sandboxed.veth:
            egress_mod.disconnect(sandboxed.veth)

    def close(self, running: list[SandboxedProcess]) -> None:
        """The platform stops: nothing of its runners, their cgroups (its own folders
        included) nor its firewall rules stays."""
        self._closed = True
        for pid in list(self._building):
            _kill(pid)
        for sandboxed in running:
            self.kill(sandboxed)
        if self.cgroups is not None:
            self.cgroups.close()
            egress_mod.remove_rules(lambda owner: owner == self.owner.name)

    def reap_orphans(self) -> int:
        """At start: kill the runners an earlier process of this platform left (their
        cgroups say which), and remove what platforms that provably died left: their
        empty cgroup folders and their firewall rules. A live platform's are kept."""
        if self.cgroups is None:
            return 0
        reaped = 0
        mine = self.owner.platform
        for name in self.cgroups.platforms():
            owner = owners.parse(name)
            dead = owner is not None and owners.is_dead(owner)
            if name == mine or (dead and owner is not None and owner.platform == mine):
                for group in self.cgroups.existing(name):
                    reaped += bool(group.pids())
                    group.remove()
                self.cgroups.remove_platform(name)
            elif dead:
                self.cgroups.remove_empty(name)
        egress_mod.remove_dead_rules()
        return reaped


async def _read_info(fd: int) -> dict[str, int] | None:
    """bubblewrap's JSON about the sandbox (its first process's pid), or None if it
    exited first. Read on the event loop: a thread hop costs milliseconds under load."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    data = b""
    while True:
        ready: asyncio.Future[None] = loop.create_future()

        def readable(ready: asyncio.Future[None] = ready) -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not chunk:
            return None
        data += chunk
        try:
            return dict(json.loads(data))
        except ValueError:
            continue


def _kill(pid: int, group: bool = True) -> None:
    try:
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
