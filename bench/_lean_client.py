"""A lean HTTP/1.1 client for benches: one kept-alive connection per worker, a request
written in one go, the answer read by Content-Length or chunks; nothing else.

httpx spends about 2 ms of CPU per request on these machines, so a bench driving a
platform through it from 16 tasks measures mostly itself (its process sits at 90-100%
of a core while the platform idles at a fifth of one). This client costs ~0.05 ms a
request, so the platform is what it measures.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable


class LeanConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """(status, body) of one request on this connection (opened on first use)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
        if method in ("POST", "PUT"):
            head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + body)
        status = int((await self._reader.readuntil(b"\r\n")).split(b" ", 2)[1])
        length, chunked = 0, False
        while (line := await self._reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if not chunked:
            return status, await self._reader.readexactly(length)
        out = b""
        while size := int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16):
            out += (await self._reader.readexactly(size + 2))[:-2]
        await self._reader.readuntil(b"\r\n")  # the last chunk's CRLF
        return status, out

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def lean_fan_out(
    url: str, n: int, concurrency: int, one: Callable[[LeanConnection, int], Awaitable[None]]
) -> None:
    """Call one(connection, i) for i in range(n) from `concurrency` workers, each with
    its own connection to `url` (http://host:port)."""
    host, _, port = url.removeprefix("http://").partition(":")
    todo = iter(range(n))

    async def worker() -> None:
        conn = LeanConnection(host, int(port))
        try:
            for i in todo:
                await one(conn, i)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


class CpuMeter:
    """CPU seconds (user + system) a process used, from /proc (None elsewhere)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def seconds(self) -> float | None:
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self._tick


class MachineMeter:
    """CPU seconds the whole machine was busy, all cores and processes (client, platform,
    runners) together, from /proc/stat (None elsewhere)."""

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.cores = os.cpu_count() or 1

    def seconds(self) -> float | None:
        try:
            with open("/proc/stat") as stat:
                fields = [int(f) for f in stat.readline().split()[1:]]
        except OSError:
            return None
        # user nice system idle iowait irq softirq steal: all but idle and iowait
        return (sum(fields[:8]) - fields[3] - fields[4]) / self._tick


class Phase:
    """Wall time and a process's CPU time over a `with` block."""

    def __init__(self, meter: CpuMeter | MachineMeter | None) -> None:
        self.meter = meter
        self.wall = 0.0
        self.cpu: float | None = None

    def __enter__(self) -> Phase:
        self._t = time.perf_counter()
        self._c = self.meter.seconds() if self.meter else None
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t
        end = self.meter.seconds() if self.meter else None
        if self._c is not None and end is not None:
            self.cpu = end - self._c
