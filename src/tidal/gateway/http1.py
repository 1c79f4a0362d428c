"""A lean HTTP/1.1 client for the proxy path: pooled keep-alive connections to
one runner, responses parsed by httptools (llhttp), bodies streamed with
backpressure both ways.

Why not a general client: on the 2-core machines this project targets, the
gateway's CPU per request is the throughput limit, and a profile of the aiohttp
version spent about 40% of it building requests (header merging, URL objects,
cookie and redirect machinery) that a proxy does not need. Here the request
head is the caller's headers joined as bytes, and nothing else happens.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools

from tidal.backends.base import Address
from tidal.gateway.upstream import open_socket

# Below common servers' keep-alive timeouts (uvicorn: 5 s), so a pooled
# connection is rarely reused just as the runner closes it.
KEEPALIVE_SECONDS = 3.0
# Response bytes buffered from a runner before reading from it pauses.
HIGH_WATER = 1 << 20


class UpstreamError(ConnectionError):
    """The runner closed or broke the connection."""


class UpstreamConnectError(UpstreamError):
    """No connection could be made: nothing was sent, so another runner may be tried."""


class UpstreamConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._loop = asyncio.get_running_loop()
        self._head: asyncio.Future[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused_reading = False
        self._paused_writing = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._framed = False  # the response has Content-Length or chunked framing
        self._complete = False
        self._keep_alive = False
        self._error: Exception | None = None
        self.closed = False

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the runner sent a malformed HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        # A response without framing ends when the runner closes the connection.
        if self.status and not self._framed and not self._complete:
            self.on_message_complete()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._complete:
            reason = f": {exc}" if exc else ""
            self._fail(UpstreamError(f"the runner closed the connection{reason}"))
        self._wake_drain()

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._wake_drain()

    # -- httptools callbacks ---------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-length" or lower == b"transfer-encoding":
            self._framed = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        # Only valid while the parser is on this message (it resets after).
        self._keep_alive = self._parser.should_keep_alive()
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused_reading and self.transport:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self._complete = True
        self._wake()

    # -- what the gateway calls ------------------------------------------------
    def start(self) -> None:
        """Reset for the next request on this connection."""
        self._parser = httptools.HttpResponseParser(self)
        self._head = self._loop.create_future()
        self.status = 0
        self.headers = []
        self._framed = self._complete = self._keep_alive = False
        self._error = None
        self._chunks.clear()
        self._buffered = 0

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise self._error or UpstreamError("the runner closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        while self._paused_writing and not self.closed:
            self._drained = self._loop.create_future()
            await self._drained
        if self.closed and self._error:
            raise self._error

    async def read_head(self, head_only: bool) -> None:
        assert self._head is not None
        await self._head
        if head_only:
            # A HEAD response has no body whatever its headers say; don't reuse
            # the connection rather than teach the parser that.
            self._complete = True
            self.close()

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused_reading and self._buffered < HIGH_WATER // 2 and self.transport:
                    self._paused_reading = False
                    self.transport.resume_reading()
                yield chunk
            elif self._complete:
                return
            elif self._error is not None:
                raise self._error
            else:
                self._wakeup = self._loop.create_future()
                await self._wakeup

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved here; the awaiting caller re-raises it
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _wake_drain(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)


class UpstreamPool:
    """Keep-alive connections to one runner, most recently used first."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._idle: list[UpstreamConnection] = []
        default_host = address.host if address.netns_pid is None else "127.0.0.1"
        self.host_header = f"{default_host}:{address.port}".encode()

    async def acquire(self) -> UpstreamConnection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_SECONDS:
                conn.start()
                return conn
            conn.close()
        try:
            sock = await open_socket(self.address)
        except OSError as exc:
            raise UpstreamConnectError(
                f"cannot connect to {self.address.host}:{self.address.port}: {exc}"
            ) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _, conn = await asyncio.get_running_loop().create_connection(UpstreamConnection, sock=sock)
        conn.start()
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if conn.reusable:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


async def request_once(
    address: Address, method: str, path: str, timeout: float
) -> tuple[int, bytes]:
    """One request on a fresh connection (probes and control-plane fetches)."""
    pool = UpstreamPool(address)
    async with asyncio.timeout(timeout):
        conn = await pool.acquire()
        try:
            conn.write(
                f"{method} {path} HTTP/1.1\r\nhost: {pool.host_header.decode()}\r\n"
                "content-length: 0\r\nconnection: close\r\n\r\n".encode()
            )
            await conn.read_head(head_only=method == "HEAD")
            body = b"".join([chunk async for chunk in conn.body()])
            return conn.status, body
        finally:
            conn.close()
