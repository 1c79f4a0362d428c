"""A runner template: a runner process started ahead of need, launched exactly as a
runner is (same backend, same sandbox, same user), that has started the interpreter,
imported tidal's runtime and the user's module and built what serving needs, but
ran no `setup()`, touched no GPU and listens on nothing. A runner claims it: the
platform sends the runner's environment, port and log, and the template becomes
that runner. A template serves one runner only and is never shared, so no state
passes from one runner to another.

What makes a template unsafe to hand out is refused here, before any claim: CUDA
initialised at import (the template was started with no GPU; the runner's GPUs are
chosen at claim time) and threads started at import (they would carry the
template's environment into the runner, and they keep running while the process
becomes another runner). The platform then starts that revision's runners fresh and
says why in each runner's record.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from tidal.runtime.channel import Channel


@dataclass(frozen=True)
class Claim:
    port: int
    host: str


def unsafe_reason() -> str:
    """Why this process must not become a runner later ("" when it may)."""
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if others:
        return f"the app's module started threads at import ({', '.join(sorted(others)[:5])})"
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and getattr(cuda, "is_initialized", lambda: False)():
        return "the app's module initialised CUDA at import"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    if "libcuda.so" in maps:
        return "the app's module loaded the CUDA driver (libcuda) at import"
    return ""


def resident_kib() -> int:
    """This process's resident memory (what a waiting template costs), in KiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def wait_for_claim(channel: Channel) -> Claim | None:
    """Block until a runner claims this template, then become it: its log on
    stdout/stderr and exactly its environment. None: the platform let it go."""
    message, fds = channel.receive()
    if message is None or "claim" not in message or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return None
    claim = message["claim"]
    sys.stdout.flush()
    sys.stderr.flush()
    log_fd = fds[0]
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    env = {str(k): str(v) for k, v in claim["env"].items()}
    if "PWD" in os.environ:  # set by the shell that started it (the sandbox's): not per runner
        env.setdefault("PWD", os.environ["PWD"])
    os.environ.clear()
    os.environ.update(env)
    return Claim(port=int(claim["port"]), host=str(claim["host"]))
