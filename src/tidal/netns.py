"""Private network namespaces for runners, so that two runners of one app can
both listen on their `exposed_port` on one host.

The runner unshares its own namespace before the user's code starts; the
platform reaches it by creating a socket while its thread is inside that
namespace (a socket keeps the namespace it was made in), then connecting it.
Used by both the runtime and the local backend, so it imports nothing else.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from functools import cache

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def unshare_network() -> None:
    """Move this process into a new network namespace with loopback up."""
    if _libc().unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}")
    # No `ip` binary needed: set IFF_UP on lo with the classic ioctl.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, _SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | _IFF_UP))


@cache
def can_isolate() -> bool:
    """Whether this host lets a child create its own network namespace (root, Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    probe = "from tidal.netns import unshare_network; unshare_network()"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@contextlib.contextmanager
def _inside(pid: int) -> Iterator[None]:
    # setns() moves only the calling thread; go back before anything else runs on it.
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            if _libc().setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into runner {pid}'s network failed: {os.strerror(err)}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if _libc().setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - would be fatal
                raise SystemExit("tidal: could not return to the platform's network namespace")
    finally:
        os.close(home)


def socket_in(pid: int) -> socket.socket:
    """A non-blocking TCP socket that lives in process `pid`'s network namespace."""
    with _inside(pid):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
