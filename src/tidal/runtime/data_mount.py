"""`/data` inside a runner: the platform's persistent directory, shared by all
runners of all apps and kept across deploys.

As root on Linux the runner gets a private mount namespace with the directory
bind-mounted at /data; elsewhere the path is only given as TIDAL_DATA_DIR.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MOUNT_POINT = "/data"


def mount_data(source: Path) -> str | None:
    """Bind `source` at /data for this process and its children; why not, or None."""
    os.environ["TIDAL_DATA_DIR"] = str(source)
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "not root on Linux"
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    try:
        check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        # Mounts made here must not propagate back to the host.
        check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        os.makedirs(MOUNT_POINT, exist_ok=True)
        check(
            libc.mount(str(source).encode(), MOUNT_POINT.encode(), None, MS_BIND, None),
            f"bind {source} at {MOUNT_POINT}",
        )
    except OSError as exc:
        return str(exc)
    return None
