"""Owner names of host-wide leftovers: a live platform's are never taken for a dead one's."""

from __future__ import annotations

import os
import subprocess
import sys

from tidal.sandbox import owners


def test_this_process_is_alive_and_round_trips() -> None:
    me = owners.this_process("0123456789ab")
    assert me.pid == os.getpid() and me.start > 0 and me.pidns > 0
    assert owners.parse(me.name) == me
    assert not owners.is_dead(me)


def test_an_exited_process_is_dead_and_a_reused_pid_is_told_apart() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = owners._start(child.pid)
        assert start is not None
        pidns = owners.this_process("0123456789ab").pidns
        alive = owners.Owner("0123456789ab", pidns, child.pid, start)
        assert not owners.is_dead(alive)
        # Same pid, another start time: the pid was reused, its owner is gone.
        assert owners.is_dead(owners.Owner(alive.platform, alive.pidns, child.pid, start + 1))
    finally:
        child.kill()
        child.wait()
    assert owners.is_dead(alive)


def test_what_cannot_be_proved_dead_is_kept() -> None:
    me = owners.this_process("0123456789ab")
    # An older layout's name, or any other folder: not an owner at all.
    for name in ("0123456789ab", "p1", "0123456789ab-1-2", "docker"):
        assert owners.parse(name) is None
    # Another PID namespace's pid 1 says nothing about a process here.
    other = owners.Owner(me.platform, me.pidns + 1, 999_999_999, 1)
    assert not owners.is_dead(other)
