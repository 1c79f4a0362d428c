"""Connections from the gateway to runners.

aiohttp is the client on the proxy path: measured on this project's 2-core
machines it forwards about 10x what httpx does (docs/architecture.md). Each
runner gets its own pooled session; a runner in a private network namespace
gets a connector whose sockets are made inside that namespace.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

from tidal import netns
from tidal.backends.base import Address

# Below common servers' keep-alive timeouts (uvicorn: 5 s), so the gateway
# rarely reuses a connection the runner is closing at the same moment.
KEEPALIVE_SECONDS = 3.0


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


class NamespaceConnector(aiohttp.BaseConnector):
    """Pooled connections to a server inside another process's network namespace."""

    def __init__(self, address: Address, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._address = address

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> ResponseHandler:
        try:
            sock = await open_socket(self._address)
        except OSError as exc:
            raise aiohttp.ClientConnectorError(req.connection_key, exc) from exc
        _, proto = await self._loop.create_connection(self._factory, sock=sock)
        return proto


def session_for(address: Address) -> aiohttp.ClientSession:
    connector: aiohttp.BaseConnector
    if address.netns_pid is None:
        connector = aiohttp.TCPConnector(
            limit=0, keepalive_timeout=KEEPALIVE_SECONDS, use_dns_cache=False
        )
    else:
        connector = NamespaceConnector(address, limit=0, keepalive_timeout=KEEPALIVE_SECONDS)
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,  # bodies pass through byte-identical
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),  # cookies belong to the caller, not the gateway
    )
    # aiohttp resends an idempotent request when a reused connection drops. A request
    # that reached the runner is never sent twice (a GET that crashed one runner must
    # not crash the next); the gateway itself retries only connections never made.
    session._retry_connection = False
    return session


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
