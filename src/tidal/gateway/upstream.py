"""Sockets to runners: plain loopback TCP, or made inside a runner's private
network namespace; and the readiness probe that uses them."""

from __future__ import annotations

import asyncio
import socket

from tidal import netns
from tidal.backends.base import Address


async def open_socket(address: Address) -> socket.socket:
    loop = asyncio.get_running_loop()
    if address.netns_pid is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    else:
        sock = netns.socket_in(address.netns_pid)
    try:
        await loop.sock_connect(sock, (address.host, address.port))
    except BaseException:
        sock.close()
        raise
    return sock


async def answers_http(address: Address, timeout: float = 2.0) -> bool:
    """Whether a server at `address` answers an HTTP request (any status)."""
    try:
        sock = await asyncio.wait_for(open_socket(address), timeout)
    except (TimeoutError, OSError):
        return False
    try:
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        head = await asyncio.wait_for(reader.read(5), timeout)
        writer.close()
        return head == b"HTTP/"
    except (TimeoutError, OSError):
        sock.close()
        return False


class HttpProber:
    """The controller's `tidal.scaling.probe.Prober` over real connections."""

    async def answers(self, address: Address, timeout: float) -> bool:
        return await answers_http(address, timeout)

    async def request(
        self, address: Address, method: str, path: str, timeout: float
    ) -> tuple[int, bytes]:
        from tidal.gateway.http1 import request_once  # http1 imports this module

        return await request_once(address, method, path, timeout)
