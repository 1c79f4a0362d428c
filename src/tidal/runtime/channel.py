"""The runner's line to the platform: one end of a Unix socketpair (SOCK_SEQPACKET,
so a message is one datagram) that the runner inherits as `--control-fd`.

An App's runner says when its server listens (`{"listening": true}`, and a
LISTENING_LINE on stdout), so the platform forwards the waiting request at once
instead of probing on a timer. A template
(tidal.runtime.template) also says it is ready or why it cannot be used, and
receives its claim: the runner it becomes, with the runner's log as a file
descriptor. Messages are small JSON objects; this module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any

MAX_MESSAGE = 256 * 1024  # a claim carries the runner's environment; nothing is bigger
MAX_FDS = 4
# Also printed when an App's server listens: where the runner has no socket to the
# platform (a container), the platform reads it from the runner's output instead.
LISTENING_LINE = "tidal runtime: listening on "


def pair() -> tuple[socket.socket, socket.socket]:
    """(platform's end, runner's end); the runner's end is inheritable."""
    platform_end, runner_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    runner_end.set_inheritable(True)
    return platform_end, runner_end


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"a control message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return data


def decode(data: bytes) -> dict[str, Any]:
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError(f"a control message must be a JSON object, not {type(message).__name__}")
    return message


class Channel:
    """The runner's (blocking) end."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.set_inheritable(False)  # the user's subprocesses get no line to the platform

    def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the platform stopped listening: it probes
            self.sock.send(encode(message))

    def receive(self) -> tuple[dict[str, Any] | None, list[int]]:
        """The next message and the descriptors sent with it; (None, []) once closed."""
        data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, MAX_FDS)
        if not data:
            return None, fds
        return decode(data), fds
