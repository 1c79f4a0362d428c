"""Who owns a host-wide leftover of the sandbox (a platform's cgroup folder, its
firewall rules): one platform process, named `<platform>-<pidns>-<pid>-<start>`.

`<platform>` names the DATA_DIR (tidal.sandbox.launch.platform_name); the rest names
the process: its PID namespace, pid and start time, so that a later platform can
prove an owner dead (same namespace, and no process with that pid started then) and
remove what it left, while never touching a live platform's (tests run several at
once). Anything it cannot prove dead, an older layout's name included, is kept.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^([0-9a-f]{12})-(\d+)-(\d+)-(\d+)$")


@dataclass(frozen=True)
class Owner:
    platform: str
    pidns: int
    pid: int
    start: int

    @property
    def name(self) -> str:
        return f"{self.platform}-{self.pidns}-{self.pid}-{self.start}"


def parse(name: str) -> Owner | None:
    """The owner a folder or rule comment names; None for any other name."""
    found = _NAME.match(name)
    if found is None:
        return None
    platform, pidns, pid, start = found.groups()
    return Owner(platform, int(pidns), int(pid), int(start))


def _pidns(pid: int | str) -> int | None:
    try:
        link = os.readlink(f"/proc/{pid}/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return None
    return int(link.partition("[")[2].rstrip("]") or 0) or None


def _start(pid: int | str) -> int | None:
    """The process's start time (clock ticks after boot), field 22 of its stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def this_process(platform: str) -> Owner:
    """The owner name of this platform process."""
    return Owner(platform, _pidns("self") or 0, os.getpid(), _start("self") or 0)


def is_dead(owner: Owner) -> bool:
    """True only when provably so: the owner lived in this PID namespace and no process
    with its pid and start time exists now. Another namespace's pids say nothing here."""
    here = _pidns("self")
    if here is None or owner.pidns != here:
        return False
    if not Path(f"/proc/{owner.pid}").exists():
        return True
    start = _start(owner.pid)
    return start is not None and start != owner.start  # another start: the pid was reused
