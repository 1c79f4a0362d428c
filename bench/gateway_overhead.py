"""What tidal's gateway adds on top of a trivial upstream, measured in one run.

The same tiny ASGI app (uvicorn with httptools + uvloop) is measured directly
and through the gateway of a real platform process, one request at a time
(latency) and with many connections (throughput). Run it with

    .venv/bin/python bench/gateway_overhead.py [--requests N] [--duration S] [--connections C]

It starts its own platforms on free ports in temp dirs and stops them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import uvloop
from rich.console import Console
from rich.table import Table

from tidal.backends.local import LocalBackend, free_port
from tidal.testing import PlatformProcess, start_platform, wait_for

HOST = "127.0.0.1"
FUNCTION_NAME = "bench_upstream"
APP_NAME = FUNCTION_NAME.replace("_", "-")
ISOLATED_LABEL = "gateway (isolation on, netns)"
WARMUP_REQUESTS = 200
WRK_THREADS = 1  # the machine has 2 cores: leave the other to the servers
START_TIMEOUT_S = 60.0
TARGET_ADDED_P50_MS = 0.5
TARGET_RPS_SHARE = 0.25

# The trivial upstream, a raw ASGI app with a short fixed body, and the function serving it.
UPSTREAM_PY = """\
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": b"ok"})
"""
APP_PY = """\
import subprocess, sys
import tidal

@tidal.function(exposed_port={port}, keep_alive=3600, min_concurrency=1, max_concurrency=1,
                max_multiplexing={max_multiplexing})
def {name}():
    args = "upstream:app --host 127.0.0.1 --port {port} --no-access-log --loop uvloop --http httptools"
    subprocess.run([sys.executable, "-m", "uvicorn", *args.split()], check=True)
"""

# Piped output gets a width that fits the table instead of 80 columns.
console = Console(width=None if sys.stdout.isatty() else 150)


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


@dataclass
class SeqResult:
    p50_ms: float
    p99_ms: float


@dataclass
class LoadResult:
    rps: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: str = ""


@dataclass
class Row:
    label: str
    seq: SeqResult | None = None
    load: LoadResult | None = None
    note: str = ""


# -- the platform and the app ------------------------------------------------------------------
@contextlib.contextmanager
def deployed(
    root: Path, isolation: bool, args: argparse.Namespace
) -> Iterator[tuple[PlatformProcess, int]]:
    """A platform with the upstream deployed and answering 200 through the gateway, and the
    upstream's port. One at a time, so the measured platform has the machine to itself."""
    mode, port = ("on" if isolation else "off"), free_port()
    app_dir, data_dir = root / f"app-{mode}", root / f"data-{mode}"
    app_dir.mkdir()
    data_dir.mkdir()
    (app_dir / "upstream.py").write_text(UPSTREAM_PY)
    app_py = APP_PY.format(port=port, name=FUNCTION_NAME, max_multiplexing=args.max_multiplexing)
    (app_dir / "app.py").write_text(app_py)
    console.print(
        f"starting a platform (isolation {mode}) and deploying the upstream on port {port}"
    )
    with contextlib.ExitStack() as stack:
        # A terminal Ctrl-C reaches the platform too (same process group), then start_platform
        # sends its own SIGINT, and on a second SIGINT uvicorn skips the shutdown that stops
        # the runners (in sessions of their own): reap what their pid files list, once it exited.
        stack.callback(reap_runners, data_dir)
        isolation_arg = "auto" if isolation else "off"
        # Both rows without the sandbox (which always gives a runner its own namespace and a
        # CPU quota): the rows differ only in the namespace the gateway connects into.
        platform = stack.enter_context(
            start_platform(data_dir, ["--isolation", isolation_arg, "--sandbox", "off"])
        )
        platform.cli("deploy", f"app.py::{FUNCTION_NAME}", cwd=app_dir)
        url = gateway_url(platform)
        try:
            wait_for(lambda: answers_200(platform, url), START_TIMEOUT_S, what=f"{url} to answer")
        except AssertionError as exc:
            raise BenchError(f"{exc}; the logs:\n{log_tails(data_dir)}") from None
        yield platform, port


def gateway_url(platform: PlatformProcess) -> str:
    return f"{platform.url}/local/{APP_NAME}/"


def answers_200(platform: PlatformProcess, url: str) -> bool:
    if platform.process.poll() is not None:
        raise BenchError(f"the platform exited:\n{log_tails(platform.data_dir)}")
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=5).status_code == 200
    return False


def runner_is_isolated(platform: PlatformProcess) -> bool:
    runners = httpx.get(f"{platform.url}/api/v1/apps/{APP_NAME}/runners").json()
    return any(r["state"] == "ready" and r["isolated_network"] for r in runners)


def reap_runners(data_dir: Path) -> None:
    if reaped := LocalBackend(data_dir / "runners").reap_orphans():
        console.print(f"[red]{reaped} runner group(s) outlived their platform; killed them")


def log_tails(data_dir: Path, lines: int = 15) -> str:
    """The last lines of the platform's log and the runners' logs."""
    tails = [
        f"{path.name}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        for path in sorted(data_dir.rglob("*.log"))
    ]
    return "\n".join(tails) or "(no logs)"


# -- the sequential client: a raw socket, lean enough not to be the bottleneck -----------------
CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)")


def get_request(url: str) -> tuple[str, int, bytes]:
    """Host, port and the bytes of a keep-alive HTTP/1.1 GET of url."""
    parts = urlsplit(url)
    host, port = parts.hostname or HOST, parts.port or 80
    return host, port, f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


def body_length(head: bytes) -> int:
    match = CONTENT_LENGTH.search(head)
    if match is None:
        raise BenchError(f"response without content-length: {head[:200]!r}")
    return int(match.group(1))


def http_get(sock: socket.socket, request: bytes, buf: bytes) -> tuple[int, bytes]:
    """Send one GET and read the whole response; returns its status and what came after it."""
    sock.sendall(request)
    while (end := buf.find(b"\r\n\r\n")) < 0:
        buf += recv(sock)
    total = end + 4 + body_length(buf[:end])
    while len(buf) < total:
        buf += recv(sock)
    return int(buf[9:12]), buf[total:]


def recv(sock: socket.socket) -> bytes:
    if chunk := sock.recv(65536):
        return chunk
    raise BenchError("the server closed the connection")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def measure_sequential(url: str, requests: int) -> SeqResult:
    """WARMUP_REQUESTS untimed, then `requests` timed GETs, one at a time on one connection."""
    host, port, request = get_request(url)
    samples, buf, clock = [0] * (WARMUP_REQUESTS + requests), b"", time.perf_counter_ns
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(samples)):
            start = clock()
            status, buf = http_get(sock, request, buf)
            samples[i] = clock() - start
            if status != 200:
                raise BenchError(f"{url} answered {status} during the measurement")
    ms = sorted(s / 1e6 for s in samples[WARMUP_REQUESTS:])
    return SeqResult(percentile(ms, 0.50), percentile(ms, 0.99))


# -- the concurrent load: wrk, or a Python asyncio fallback ------------------------------------
WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
WRK_ERRORS = re.compile(r"^\s*(Socket errors:.*|Non-2xx or 3xx responses:.*)$", re.MULTILINE)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, connections: int, duration: float) -> LoadResult:
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{max(1, round(duration))}s"]
    done = subprocess.run([*cmd, "--latency", url], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    if (rps := WRK_RPS.search(done.stdout)) is None:
        raise BenchError(f"no Requests/sec in wrk's output:\n{done.stdout}")
    latency = {p: float(v) * UNIT_MS[unit] for p, v, unit in WRK_LATENCY.findall(done.stdout)}
    errors = "; ".join(m.strip() for m in WRK_ERRORS.findall(done.stdout))
    return LoadResult(float(rps.group(1)), latency.get("50"), latency.get("99"), errors)


async def load_worker(url: str, until: float, latencies: list[float]) -> int:
    """GET url on one connection until `until`; returns how many answers were not 200."""
    host, port, request = get_request(url)
    reader, writer = await asyncio.open_connection(host, port)
    clock, errors = time.perf_counter, 0
    try:
        while (start := clock()) < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(body_length(head))
            latencies.append(clock() - start)
            errors += head[9:12] != b"200"
    finally:
        writer.close()
    return errors


async def python_load(url: str, connections: int, duration: float) -> LoadResult:
    latencies: list[float] = []
    start = time.perf_counter()
    workers = (load_worker(url, start + duration, latencies) for _ in range(connections))
    bad = sum(await asyncio.gather(*workers))
    elapsed = time.perf_counter() - start
    ms = sorted(x * 1000 for x in latencies)
    errors = f"Non-200 responses: {bad}" if bad else ""
    return LoadResult(len(ms) / elapsed, percentile(ms, 0.50), percentile(ms, 0.99), errors)


def run_python_load(url: str, connections: int, duration: float) -> LoadResult:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(python_load(url, connections, duration))


def pick_load_generator(choice: str) -> str:
    if choice == "python" or shutil.which("wrk") is not None:
        return "wrk" if choice == "auto" else choice
    if choice == "wrk":
        raise BenchError(
            "--load-generator wrk given but wrk is not installed (apt-get install wrk)"
        )
    console.print(
        "[yellow]wrk not found[/] (install it with `apt-get install -y wrk`); falling back to "
        "a Python asyncio load generator (one process, one core), which can top out below "
        "wrk: its direct req/s in particular may be a lower bound"
    )
    return "python"


# -- the rows ----------------------------------------------------------------------------------
def measure_row(label: str, url: str, args: argparse.Namespace, note: str = "") -> Row:
    console.print(f"measuring [bold]{label}[/]  ({url})")
    row = Row(label, measure_sequential(url, args.requests), note=note)
    load = run_wrk if args.load_generator == "wrk" else run_python_load
    row.load = load(url, args.connections, args.duration)
    row.note = "; ".join(filter(None, [row.note, row.load.errors]))
    return row


def measure_isolated(root: Path, args: argparse.Namespace) -> Row:
    if args.skip_isolated:
        return Row(ISOLATED_LABEL, note="skipped (--skip-isolated)")
    if os.geteuid() != 0:
        return Row(ISOLATED_LABEL, note="skipped: a private network namespace needs root")
    try:
        with deployed(root, True, args) as (platform, _port):
            note = "" if runner_is_isolated(platform) else "runner was NOT isolated (host network)"
            return measure_row(ISOLATED_LABEL, gateway_url(platform), args, note)
    except (BenchError, AssertionError) as exc:  # tidal.testing fails with AssertionError
        console.print(f"[red]the isolation-on row failed:[/] {exc}")
        return Row(ISOLATED_LABEL, note=f"failed: {str(exc).splitlines()[0]}")


def run(root: Path, args: argparse.Namespace) -> list[Row]:
    with deployed(root, False, args) as (platform, port):
        direct = measure_row("direct (uvicorn)", f"http://{HOST}:{port}/", args)
        gateway = measure_row("gateway (isolation off)", gateway_url(platform), args)
    return [direct, gateway, measure_isolated(root, args)]


# -- the report --------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def versus(row: Row, direct: Row) -> tuple[float | None, float | None]:
    """The row's added p50 ms and share of the direct req/s, where both rows were measured."""
    seq, load = row.seq, row.load
    added = seq.p50_ms - direct.seq.p50_ms if seq and direct.seq and row is not direct else None
    share = load.rps / direct.load.rps if load and direct.load and direct.load.rps else None
    return added, share


def row_cells(row: Row, direct: Row) -> list[str]:
    seq, load, (added, share) = row.seq, row.load, versus(row, direct)
    return [
        row.label,
        fmt(seq.p50_ms) if seq else "-",
        fmt(seq.p99_ms) if seq else "-",
        fmt(added),
        fmt(load.rps, 0) if load else "-",
        "-" if share is None else f"{share:.0%}",
        f"{fmt(load.p50_ms)} / {fmt(load.p99_ms)}" if load else "-",
        row.note,
    ]


def render(rows: list[Row], args: argparse.Namespace) -> None:
    c = args.connections
    table = Table(
        title=f"tidal gateway overhead: {args.requests} sequential requests on one connection; "
        f"{c} connections for {args.duration:g} s ({args.load_generator}); "
        f"max_multiplexing={args.max_multiplexing}"
    )
    table.add_column("path", no_wrap=True)
    numbers = ("seq p50 ms", "seq p99 ms", "added p50 ms", f"req/s @{c}", "% of direct req/s")
    for name in (*numbers, f"@{c} p50 / p99 ms"):
        table.add_column(name, justify="right")
    table.add_column("note")
    for row in rows:
        table.add_row(*row_cells(row, rows[0]))
    console.print(table)
    render_targets(rows[1:], rows[0])


def verdict(ok: bool) -> str:
    return "[green]PASS[/]" if ok else "[red]MISS[/]"


def render_targets(gateway_rows: list[Row], direct: Row) -> None:
    console.print(
        f"target: added p50 <= {TARGET_ADDED_P50_MS} ms, >= {TARGET_RPS_SHARE:.0%} of direct req/s"
    )
    for row in gateway_rows:
        added, share = versus(row, direct)
        if added is None or share is None:
            console.print(f"  {row.label}: not measured ({row.note})")
            continue
        console.print(
            f"  {row.label}: added p50 {added:.3f} ms {verdict(added <= TARGET_ADDED_P50_MS)}, "
            f"{share:.0%} of direct req/s {verdict(share >= TARGET_RPS_SHARE)}"
        )


# -- main --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="What tidal's gateway adds on top of a trivial upstream."
    )
    add = parser.add_argument
    add("--requests", type=int, default=2000, help="sequential requests per row")
    add("--duration", type=float, default=5.0, help="seconds of concurrent load")
    add("--connections", type=int, default=32, help="concurrent connections")
    add(
        "--load-generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="wrk if installed (auto), or the Python asyncio fallback",
    )
    add(
        "--max-multiplexing",
        type=int,
        default=32,
        help="max_multiplexing of the benchmarked app (default 32: the trivial upstream is "
        "one async server, as direct uvicorn is; with 1, the runner takes one request at a "
        "time and the gateway queues the others, which measures queueing, not the proxy)",
    )
    add("--skip-isolated", action="store_true", help="leave out the isolation-on gateway row")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.connections < 1 or args.duration <= 0:
        parser.error("--requests and --connections must be >= 1 and --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tidal-bench-", ignore_cleanup_errors=True) as tmp:
        try:
            args.load_generator = pick_load_generator(args.load_generator)
            rows = run(Path(tmp), args)
        except (BenchError, AssertionError) as exc:  # tidal.testing fails with AssertionError
            console.print(f"[bold red]benchmark failed:[/] {exc}")
            return 1
        except KeyboardInterrupt:
            console.print("interrupted; the platforms were stopped")
            return 130
    render(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
