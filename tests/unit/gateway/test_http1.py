"""The proxy path's HTTP/1.1 client against real (raw asyncio) servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tidal.backends.base import Address
from tidal.backends.local import free_port
from tidal.gateway.http1 import UpstreamConnectError, UpstreamError, UpstreamPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.Server, Address, list[int]]:
    connections: list[int] = []

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(counted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, Address("127.0.0.1", port), connections


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def fetch(pool: UpstreamPool, request: bytes, head_only: bool = False) -> tuple[int, bytes]:
    conn = await pool.acquire()
    try:
        conn.write(request)
        await conn.read_head(head_only)
        body = b"".join([chunk async for chunk in conn.body()])
        return conn.status, body
    finally:
        pool.release(conn)


GET = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n"


def test_keep_alive_connections_are_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def main() -> None:
        server, address, connections = await serve(handler)
        async with server:
            pool = UpstreamPool(address)
            for _ in range(5):
                assert await fetch(pool, GET) == (200, b"ok")
            assert len(connections) == 1
            pool.close()

    asyncio.run(main())


def test_chunked_and_close_delimited_bodies() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if b"/chunked" in request:
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                writer.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                await writer.drain()
            else:  # no framing: the body ends when the server closes
                writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
                await writer.drain()
                return

    async def main() -> None:
        server, address, connections = await serve(handler)
        async with server:
            pool = UpstreamPool(address)
            chunked = b"GET /chunked HTTP/1.1\r\nhost: t\r\n\r\n"
            assert await fetch(pool, chunked) == (200, b"hello world")
            assert await fetch(pool, GET) == (200, b"until the end")
            assert len(connections) == 1  # the chunked response left it reusable
            pool.close()

    asyncio.run(main())


def test_head_response_has_no_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def main() -> None:
        server, address, _ = await serve(handler)
        async with server:
            pool = UpstreamPool(address)
            head = b"HEAD / HTTP/1.1\r\nhost: t\r\n\r\n"
            assert await asyncio.wait_for(fetch(pool, head, head_only=True), 5) == (200, b"")
            pool.close()

    asyncio.run(main())


def test_server_closing_mid_response_is_an_upstream_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()

    async def main() -> None:
        server, address, _ = await serve(handler)
        async with server:
            pool = UpstreamPool(address)
            with pytest.raises(UpstreamError, match="closed the connection"):
                await fetch(pool, GET)
            pool.close()

    asyncio.run(main())


def test_server_closing_before_answering_is_an_upstream_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async def main() -> None:
        server, address, _ = await serve(handler)
        async with server:
            pool = UpstreamPool(address)
            with pytest.raises(UpstreamError):
                await fetch(pool, GET)
            pool.close()

    asyncio.run(main())


def test_malformed_response_is_an_upstream_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def main() -> None:
        server, address, _ = await serve(handler)
        async with server:
            pool = UpstreamPool(address)
            with pytest.raises(UpstreamError, match="malformed"):
                await asyncio.wait_for(fetch(pool, GET), 5)
            pool.close()

    asyncio.run(main())


def test_nothing_listening_is_a_connect_error() -> None:
    async def main() -> None:
        pool = UpstreamPool(Address("127.0.0.1", free_port()))
        with pytest.raises(UpstreamConnectError, match="cannot connect"):
            await pool.acquire()

    asyncio.run(main())


def test_large_response_streams_with_backpressure() -> None:
    size = 8 * 1024 * 1024

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        block = b"x" * 65536
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()
        await reader.read()

    async def main() -> None:
        server, address, _ = await serve(handler)
        async with server:
            pool = UpstreamPool(address)
            conn = await pool.acquire()
            conn.write(GET)
            await conn.read_head(False)
            total = 0
            async for chunk in conn.body():
                total += len(chunk)
                if total < 2 * 1024 * 1024:
                    await asyncio.sleep(0.01)  # a slow reader: the buffer stays bounded
                    assert conn._buffered <= 2 * 1024 * 1024
            assert total == size
            pool.release(conn)
            pool.close()

    asyncio.run(main())
