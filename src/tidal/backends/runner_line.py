"""The platform's end of a runner's control line (tidal.runtime.channel): what the
runner says (a template ready or unusable, its server listening), as asyncio state."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from tidal.runtime.channel import decode, encode


class RunnerLine:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.listening = asyncio.Event()
        self.ended = asyncio.Event()  # the runner closed its end (it exited)
        # A template's verdict: "" ready to claim, otherwise why it cannot be used.
        self.verdict: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.rss_kib = 0
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(self.sock, 4096):
                self._take(decode(data))
        except (OSError, ValueError):
            pass  # a runner that says nothing sensible is probed like any other
        finally:
            self.ended.set()
            self._settle("it exited before it had imported the app (see its log)")

    def _take(self, message: dict[str, Any]) -> None:
        if message.get("listening"):
            self.listening.set()
        elif message.get("template_ready"):
            self.rss_kib = int(message.get("rss_kib") or 0)
            self._settle("")
        elif "unsafe" in message:
            self._settle(str(message["unsafe"])[:500])

    async def heard_listening(self) -> bool:
        """True once the runner says its server listens; False if its line ends first."""
        if not self.listening.is_set():
            said = asyncio.ensure_future(self.listening.wait())
            ended = asyncio.ensure_future(self.ended.wait())
            try:
                await asyncio.wait({said, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                said.cancel()
                ended.cancel()
        return self.listening.is_set()

    def _settle(self, verdict: str) -> None:
        if not self.verdict.done():
            self.verdict.set_result(verdict)

    def send(self, message: dict[str, Any], fds: list[int]) -> None:
        """A short message to the runner (it is waiting for it; the buffer has room)."""
        self.sock.setblocking(True)
        try:
            socket.send_fds(self.sock, [encode(message)], fds)
        finally:
            self.sock.setblocking(False)

    def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(OSError):
            self.sock.close()
