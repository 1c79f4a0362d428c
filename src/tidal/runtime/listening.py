"""A uvicorn server that says when its port takes connections: how an App's or a
plain function's runner tells the platform it is ready (tidal.runtime.main)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn


class ListeningServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_listening: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_listening = on_listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_listening is not None:
            self._on_listening()
