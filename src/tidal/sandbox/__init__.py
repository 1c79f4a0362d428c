"""The runner sandbox: what an app's code can reach on the local backend.

Every local runner runs under bubblewrap with its app's own unprivileged uid,
no capabilities, a private mount, PID, IPC and network namespace, an
environment built from an allowlist, and cgroup limits from its machine type.
`Sandbox.prepare` returns what any process needs to run inside a given app's
sandbox (argv prefix, environment, cgroup); `Sandbox.spawn` starts one there.
"""

from tidal.sandbox.launch import Prepared, Sandbox, SandboxedProcess, SandboxUnavailable
from tidal.sandbox.limits import Limits, out_of_memory_reason

__all__ = [
    "Limits",
    "Prepared",
    "Sandbox",
    "SandboxUnavailable",
    "SandboxedProcess",
    "out_of_memory_reason",
]
