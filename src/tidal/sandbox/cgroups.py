"""Runner cgroups: CPU quota, memory and pids limits, on cgroup v2, v1, or a mix of
the two (a v1 hierarchy per controller plus a v2 `unified` tree), each controller
where the host has it.

Layout: `<hierarchy>/tidal/<platform>/<runner>`; `<platform>` names one platform
process (tidal.sandbox.owners: its DATA_DIR, pid and start time), so platforms sharing
a host never touch each other's runners, and a dead one's empty folders can be told
from a live one's and removed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from tidal.sandbox.limits import CPU_PERIOD_US, Limits

CONTROLLERS = ("cpu", "memory", "pids")
MOUNTINFO = Path("/proc/self/mountinfo")


class CgroupError(OSError):
    pass


@dataclass(frozen=True)
class Hierarchy:
    controller: str
    mount: Path
    v2: bool


def find_hierarchies(mountinfo: str) -> dict[str, Hierarchy]:
    """Where each controller is mounted: v2 wins where its tree offers the controller."""
    v1: dict[str, Path] = {}
    v2_mounts: list[Path] = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        mount = Path(fields[4].replace("\\040", " "))
        if extra[0] == "cgroup2":
            v2_mounts.append(mount)
        elif extra[0] == "cgroup":
            for option in extra[2].split(","):
                if option in CONTROLLERS:
                    v1[option] = mount
    found: dict[str, Hierarchy] = {}
    for mount in v2_mounts:
        try:
            offered = (mount / "cgroup.controllers").read_text().split()
        except OSError:
            continue
        for name in CONTROLLERS:
            if name in offered and name not in found:
                found[name] = Hierarchy(name, mount, True)
    for name, mount in v1.items():
        found.setdefault(name, Hierarchy(name, mount, False))
    return found


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(exc.errno, f"cannot write {value!r} to {path}: {exc.strerror}") from None


def _enable_v2(mount: Path, relative: Path, controllers: list[str]) -> None:
    """v2 hands a controller down only where every ancestor enabled it for its children."""
    folder = mount
    wanted = " ".join(f"+{c}" for c in controllers)
    for part in relative.parts:
        control = folder / "cgroup.subtree_control"
        enabled = control.read_text().split()
        if any(c not in enabled for c in controllers):
            _write(control, wanted)
        folder = folder / part
        folder.mkdir(exist_ok=True)


class RunnerCgroup:
    """One runner's cgroup: a folder in each hierarchy that has one of its controllers."""

    def __init__(self, folders: dict[str, Path], v2: dict[str, bool]) -> None:
        self.folders = folders  # controller -> folder
        self.v2 = v2

    @property
    def _distinct(self) -> list[Path]:
        return list(dict.fromkeys(self.folders.values()))

    def set_cpus(self, limits: Limits) -> None:
        folder = self.folders.get("cpu")
        if folder is None:
            return
        if self.v2["cpu"]:
            _write(folder / "cpu.max", f"{limits.cpu_quota_us} {CPU_PERIOD_US}")
        else:
            _write(folder / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(folder / "cpu.cfs_quota_us", str(limits.cpu_quota_us))

    def apply(self, limits: Limits) -> None:
        for name, folder in self.folders.items():
            if name == "cpu":
                self.set_cpus(limits)
            elif name == "memory":
                if self.v2[name]:
                    _write(folder / "memory.max", str(limits.memory_bytes))
                    if (folder / "memory.swap.max").exists():
                        _write(folder / "memory.swap.max", "0")
                else:
                    _write(folder / "memory.limit_in_bytes", str(limits.memory_bytes))
                    if (folder / "memory.memsw.limit_in_bytes").exists():  # no swapping past it
                        _write(folder / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
            elif name == "pids":
                _write(folder / "pids.max", str(limits.pids))

    def add(self, pid: int) -> None:
        for folder in self._distinct:
            _write(folder / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        found: set[int] = set()
        for folder in self._distinct:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
        return sorted(found)

    def oom_kills(self) -> int:
        folder = self.folders.get("memory")
        if folder is None:
            return 0
        name = "memory.events" if self.v2["memory"] else "memory.oom_control"
        try:
            for line in (folder / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def cpu_throttled(self) -> int:
        """How many periods the quota held the runner back (0 without a cpu controller)."""
        folder = self.folders.get("cpu")
        if folder is None:
            return 0
        with contextlib.suppress(OSError, ValueError):
            for line in (folder / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "nr_throttled":
                    return int(value)
        return 0

    def signal_all(self, sig: int) -> int:
        sent = 0
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                sent += 1
        return sent

    def kill(self) -> None:
        for folder in self._distinct:
            if (folder / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    (folder / "cgroup.kill").write_text("1")
        self.signal_all(signal.SIGKILL)

    def remove(self, wait: float = 2.0) -> bool:
        """Kill what is left and remove the folders; False if some stayed busy."""
        deadline = time.monotonic() + wait
        left = self._distinct
        while left:
            self.kill()
            remaining = []
            for folder in left:
                try:
                    folder.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    remaining.append(folder)
            left = remaining
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return not left


class CgroupTree:
    """The cgroups of one platform's runners."""

    def __init__(self, hierarchies: dict[str, Hierarchy], platform: str) -> None:
        self.hierarchies = hierarchies
        self.platform = platform
        self.relative = Path("tidal") / platform

    @classmethod
    def open(cls, platform: str) -> CgroupTree:
        try:
            hierarchies = find_hierarchies(MOUNTINFO.read_text())
        except OSError as exc:
            raise CgroupError(exc.errno, f"cannot read {MOUNTINFO}: {exc.strerror}") from None
        missing = [c for c in CONTROLLERS if c not in hierarchies]
        if missing:
            raise CgroupError(0, f"no cgroup controller {', '.join(missing)} is mounted")
        tree = cls(hierarchies, platform)
        tree._prepare()
        return tree

    @property
    def versions(self) -> str:
        """How the host offers them, e.g. 'v1 (cpu, memory, pids)'."""
        v2 = [c for c, h in self.hierarchies.items() if h.v2]
        v1 = [c for c, h in self.hierarchies.items() if not h.v2]
        parts = [f"v2 ({', '.join(v2)})" if v2 else "", f"v1 ({', '.join(v1)})" if v1 else ""]
        return " + ".join(p for p in parts if p)

    def _prepare(self) -> None:
        v2_mounts: dict[Path, list[str]] = {}
        for h in self.hierarchies.values():
            if h.v2:
                v2_mounts.setdefault(h.mount, []).append(h.controller)
            else:
                try:
                    (h.mount / self.relative).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise CgroupError(
                        exc.errno, f"cannot create {h.mount / self.relative}: {exc.strerror}"
                    ) from None
                if h.controller == "memory":  # v1: a child's usage counts toward its parent
                    with contextlib.suppress(OSError):
                        (h.mount / self.relative / "memory.use_hierarchy").write_text("1")
        for mount, controllers in v2_mounts.items():
            try:
                _enable_v2(mount, self.relative, controllers)
            except OSError as exc:
                raise CgroupError(
                    exc.errno, f"cannot enable {controllers} under {mount}: {exc.strerror}"
                ) from None

    def _folders(
        self, name: str, platform: str | None = None
    ) -> tuple[dict[str, Path], dict[str, bool]]:
        top = Path("tidal") / platform if platform else self.relative
        folders = {c: h.mount / top / name for c, h in self.hierarchies.items()}
        return folders, {c: h.v2 for c, h in self.hierarchies.items()}

    def create(self, name: str, limits: Limits) -> RunnerCgroup:
        folders, v2 = self._folders(name)
        for folder in dict.fromkeys(folders.values()):
            try:
                folder.mkdir(exist_ok=True)
            except FileNotFoundError:
                # This platform's folder went while it was empty (an operator's
                # `rmdir` of leftovers, say): make it again.
                self._prepare()
                folder.mkdir(exist_ok=True)
            except OSError as exc:
                raise CgroupError(exc.errno, f"cannot create {folder}: {exc.strerror}") from None
        group = RunnerCgroup(folders, v2)
        try:
            group.apply(limits)
        except OSError:
            group.remove()
            raise
        return group

    def close(self, wait: float = 0.5) -> None:
        """The platform stops: kill what is left in its runners' cgroups (a runner
        still starting, a template) and remove them and its own folders."""
        for group in self.existing():
            group.remove(wait)
        self.remove_platform(self.platform)

    def platforms(self) -> list[str]:
        """The names of every platform's folder on this host, this one's included."""
        names: set[str] = set()
        for mount in {h.mount for h in self.hierarchies.values()}:
            with contextlib.suppress(OSError):
                names.update(p.name for p in (mount / "tidal").iterdir() if p.is_dir())
        return sorted(names)

    def existing(self, platform: str | None = None) -> list[RunnerCgroup]:
        """Runner cgroups present now in this platform's folder (or `platform`'s)."""
        top = Path("tidal") / platform if platform else self.relative
        names: set[str] = set()
        for h in self.hierarchies.values():
            with contextlib.suppress(OSError):
                names.update(p.name for p in (h.mount / top).iterdir() if p.is_dir())
        return [RunnerCgroup(*self._folders(n, platform)) for n in sorted(names)]

    def remove_empty(self, platform: str) -> bool:
        """Remove `platform`'s runner folders that hold no process, then its own folders
        if nothing is left in them; the kernel refuses to remove a cgroup in use, so
        nothing running is touched. True if all of it is gone."""
        for group in self.existing(platform):
            for folder in dict.fromkeys(group.folders.values()):
                with contextlib.suppress(OSError):
                    folder.rmdir()
        return self.remove_platform(platform)

    def remove_platform(self, platform: str) -> bool:
        left = False
        for mount in {h.mount for h in self.hierarchies.values()}:
            try:
                (mount / "tidal" / platform).rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left = True
        return not left
