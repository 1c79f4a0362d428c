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
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

PYTHON = Path(sys.executable)
TIDAL_CLI = PYTHON.parent / "tidal"
HOST = "127.0.0.1"
OWNER = "local"
FUNCTION_NAME = "bench_upstream"
ISOLATED_LABEL = "gateway (isolation on, netns)"
APP_NAME = FUNCTION_NAME.replace("_", "-")
WARMUP_REQUESTS = 200
WRK_THREADS = 1  # the machine has 2 cores: leave the other to the servers
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
TARGET_ADDED_P50_MS = 0.5
TARGET_RPS_SHARE = 0.25

UPSTREAM_PY = '''\
"""The trivial upstream: a raw ASGI app with a short fixed body."""

BODY = b"ok"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
'''

APP_PY = """\
import subprocess
import sys

import tidal

PORT = {port}


@tidal.function(exposed_port=PORT, keep_alive=3600, min_concurrency=1, max_concurrency=1{extra})
def {name}():
    subprocess.run(
        [sys.executable, "-m", "uvicorn", "upstream:app", "--host", "127.0.0.1",
         "--port", str(PORT), "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
        check=True,
    )
"""

# Used when `tidal server` has no --isolation flag: the same serve() the CLI calls. uvicorn
# re-raises the SIGINT it handled once shut down; the CLI exits 130 on it, and so does this.
SERVE_WITHOUT_ISOLATION = """\
import sys
from pathlib import Path

from tidal.config import PlatformConfig
from tidal.server import serve

try:
    serve(PlatformConfig(data_dir=Path(sys.argv[1]), port=int(sys.argv[2]), isolate_network=False))
except KeyboardInterrupt:
    sys.exit(130)
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


@dataclass
class Platform:
    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log_path: Path


@dataclass
class Session:
    """Everything started or created, for cleanup."""

    platforms: list[Platform] = field(default_factory=list)
    temp_dirs: list[Path] = field(default_factory=list)


# -- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cli_has_isolation_flag() -> bool:
    done = subprocess.run(
        [str(PYTHON), "-m", "tidal", "server", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    return "--isolation" in done.stdout


def platform_command(port: int, data_dir: Path, isolation: bool) -> list[str]:
    base = [str(PYTHON), "-m", "tidal", "server", "--port", str(port), "--data-dir", str(data_dir)]
    if isolation:
        return base
    if cli_has_isolation_flag():
        return [*base, "--isolation", "off"]
    console.print(
        "[yellow]note:[/] `tidal server` has no --isolation flag; starting the platform "
        "through tidal.server.serve(PlatformConfig(isolate_network=False)) instead"
    )
    return [str(PYTHON), "-c", SERVE_WITHOUT_ISOLATION, str(data_dir), str(port)]


def start_platform(session: Session, root: Path, isolation: bool) -> Platform:
    port = free_port()
    data_dir = root / ("data-isolated" if isolation else "data-shared")
    data_dir.mkdir()
    log_path = root / f"platform-{'isolated' if isolation else 'shared'}.log"
    with log_path.open("wb") as log:
        # Its own session: a Ctrl-C at the terminal must not reach it; cleanup sends one SIGINT.
        proc = subprocess.Popen(
            platform_command(port, data_dir, isolation),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    platform = Platform(proc, f"http://{HOST}:{port}", data_dir, log_path)
    session.platforms.append(platform)
    wait_for_200(f"{platform.url}/api/v1/health", platform, "the platform's health check")
    return platform


def stop_platform(platform: Platform) -> None:
    """SIGINT (the platform stops its runners), wait, and kill only as a last resort."""
    proc = platform.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            console.print(f"[red]platform {proc.pid} ignored SIGINT for {STOP_TIMEOUT_S}s; killing")
            proc.kill()
            proc.wait()
    reap_leftover_runners(platform.data_dir)


def reap_leftover_runners(data_dir: Path) -> None:
    """Runners the platform should have stopped; recorded as pid files by the local backend."""
    for pid_file in (data_dir / "runners").glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pgid = int(pid_file.read_text())
            if b"tidal.runtime" in Path(f"/proc/{pgid}/cmdline").read_bytes():
                console.print(f"[red]runner group {pgid} outlived its platform; killing it")
                os.killpg(pgid, signal.SIGKILL)


def cleanup(session: Session) -> None:
    """Stop what is left and remove the temp dirs; a second Ctrl-C must not cut this short."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for platform in session.platforms:
            stop_platform(platform)
        session.platforms.clear()
        for path in session.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        session.temp_dirs.clear()
    finally:
        signal.signal(signal.SIGINT, previous)


# -- the app -------------------------------------------------------------------------------


def write_app(folder: Path, exposed_port: int, max_multiplexing: int | None) -> None:
    folder.mkdir()
    extra = "" if max_multiplexing is None else f", max_multiplexing={max_multiplexing}"
    (folder / "upstream.py").write_text(UPSTREAM_PY)
    (folder / "app.py").write_text(
        APP_PY.format(port=exposed_port, name=FUNCTION_NAME, extra=extra)
    )


def deploy(folder: Path, platform: Platform) -> None:
    done = subprocess.run(
        [str(TIDAL_CLI), "deploy", f"app.py::{FUNCTION_NAME}"],
        cwd=folder,
        env={**os.environ, "TIDAL_URL": platform.url},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"tidal deploy failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def gateway_url(platform: Platform) -> str:
    return f"{platform.url}/{OWNER}/{APP_NAME}/"


def runner_is_isolated(platform: Platform) -> bool:
    with urllib.request.urlopen(f"{platform.url}/api/v1/apps/{APP_NAME}/runners") as resp:
        runners = json.load(resp)
    return any(r["state"] == "ready" and r["isolated_network"] for r in runners)


def wait_for_200(url: str, platform: Platform, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if platform.proc.poll() is not None:
            raise BenchError(
                f"the platform exited ({platform.proc.returncode}):\n{log_tail(platform.log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
                last = f"status {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"status {exc.code}: {exc.read()[:200]!r}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise BenchError(
        f"{what} at {url} did not answer 200 in {START_TIMEOUT_S}s ({last}); "
        f"platform log:\n{log_tail(platform.log_path)}\nrunner logs:\n{runner_logs(platform)}"
    )


def log_tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def runner_logs(platform: Platform) -> str:
    logs = sorted(platform.data_dir.rglob("*.log"))
    return "\n".join(f"{p.name}:\n{log_tail(p)}" for p in logs) or "(none)"


# -- the sequential client -------------------------------------------------------------------

CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)")


class RawClient:
    """One persistent HTTP/1.1 connection, one GET at a time; lean enough not to be the bottleneck."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or HOST, parts.port or 80
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        self.buf = b""

    def get(self) -> int:
        """Send one GET and read the whole response; returns the status."""
        self.sock.sendall(self.request)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += self._recv()
        head = buf[:end]
        match = CONTENT_LENGTH.search(head)
        if match is None:
            raise BenchError(f"response without content-length: {head[:200]!r}")
        total = end + 4 + int(match.group(1))
        while len(buf) < total:
            buf += self._recv()
        self.buf = buf[total:]
        return int(head[9:12])

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise BenchError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def measure_sequential(url: str, requests: int) -> SeqResult:
    client = RawClient(url)
    try:
        for _ in range(WARMUP_REQUESTS):
            check_status(client.get(), url)
        samples = [0] * requests
        clock = time.perf_counter_ns
        for i in range(requests):
            start = clock()
            status = client.get()
            samples[i] = clock() - start
            check_status(status, url)
    finally:
        client.close()
    ms = sorted(s / 1e6 for s in samples)
    return SeqResult(percentile(ms, 0.50), percentile(ms, 0.99))


def check_status(status: int, url: str) -> None:
    if status != 200:
        raise BenchError(f"{url} answered {status} during the measurement")


# -- the concurrent load -------------------------------------------------------------------------

WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
WRK_ERRORS = re.compile(r"^\s*(Socket errors:.*|Non-2xx or 3xx responses:.*)$", re.MULTILINE)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, connections: int, duration: float) -> LoadResult:
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{max(1, round(duration))}s"]
    done = subprocess.run([*cmd, "--latency", url], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def parse_wrk(output: str) -> LoadResult:
    rps = WRK_RPS.search(output)
    if rps is None:
        raise BenchError(f"no Requests/sec in wrk's output:\n{output}")
    latency = {
        pct: float(value) * UNIT_MS[unit] for pct, value, unit in WRK_LATENCY.findall(output)
    }
    result = LoadResult(float(rps.group(1)), latency.get("50"), latency.get("99"))
    result.errors = "; ".join(m.strip() for m in WRK_ERRORS.findall(output))
    return result


async def _load_worker(url: str, until: float, latencies: list[float]) -> int:
    parts = urlsplit(url)
    host, port = parts.hostname or HOST, parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    clock = time.perf_counter
    errors = 0
    try:
        while (start := clock()) < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            match = CONTENT_LENGTH.search(head)
            if match is None:
                raise BenchError(f"response without content-length: {head[:200]!r}")
            await reader.readexactly(int(match.group(1)))
            latencies.append(clock() - start)
            errors += head[9:12] != b"200"
    finally:
        writer.close()
    return errors


async def _python_load(url: str, connections: int, duration: float) -> LoadResult:
    latencies: list[float] = []
    start = time.perf_counter()
    until = start + duration
    errors = await asyncio.gather(
        *(_load_worker(url, until, latencies) for _ in range(connections))
    )
    elapsed = time.perf_counter() - start
    ms = sorted(x * 1000 for x in latencies)
    bad = sum(errors)
    return LoadResult(
        len(ms) / elapsed,
        percentile(ms, 0.50),
        percentile(ms, 0.99),
        f"Non-200 responses: {bad}" if bad else "",
    )


def run_python_load(url: str, connections: int, duration: float) -> LoadResult:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_python_load(url, connections, duration))


def pick_load_generator(choice: str) -> str:
    if choice == "wrk" and shutil.which("wrk") is None:
        raise BenchError(
            "--load-generator wrk given but wrk is not installed (apt-get install wrk)"
        )
    if choice == "auto":
        if shutil.which("wrk") is not None:
            return "wrk"
        console.print(
            "[yellow]wrk not found[/] (install it with `apt-get install -y wrk`); falling back to "
            "a Python asyncio load generator (one process, one core), which can top out below "
            "wrk: its direct req/s in particular may be a lower bound"
        )
        return "python"
    return choice


def measure_load(url: str, args: argparse.Namespace) -> LoadResult:
    if args.load_generator == "wrk":
        return run_wrk(url, args.connections, args.duration)
    return run_python_load(url, args.connections, args.duration)


# -- the rows -------------------------------------------------------------------------------------


def measure_row(label: str, url: str, args: argparse.Namespace, note: str = "") -> Row:
    console.print(f"measuring [bold]{label}[/]  ({url})")
    row = Row(label, measure_sequential(url, args.requests), note=note)
    row.load = measure_load(url, args)
    if row.load.errors:
        row.note = "; ".join(filter(None, [row.note, row.load.errors]))
    return row


@contextlib.contextmanager
def deployed(
    session: Session, root: Path, isolation: bool, args: argparse.Namespace
) -> Iterator[tuple[Platform, int]]:
    """A platform with the upstream app deployed and answering 200 through the gateway."""
    port = free_port()
    folder = root / ("app-isolated" if isolation else "app-shared")
    write_app(folder, port, args.max_multiplexing)
    what = "isolation on" if isolation else "isolation off"
    console.print(f"starting a platform ({what}) and deploying the upstream on port {port}")
    platform = start_platform(session, root, isolation)
    try:
        deploy(folder, platform)
        wait_for_200(gateway_url(platform), platform, "the app through the gateway")
        yield platform, port
    finally:
        stop_platform(platform)
        session.platforms.remove(platform)


def measure_shared(session: Session, root: Path, args: argparse.Namespace) -> list[Row]:
    with deployed(session, root, False, args) as (platform, port):
        direct = measure_row("direct (uvicorn)", f"http://{HOST}:{port}/", args)
        gateway = measure_row("gateway (isolation off)", gateway_url(platform), args)
    return [direct, gateway]


def measure_isolated(session: Session, root: Path, args: argparse.Namespace) -> Row:
    if os.geteuid() != 0:
        return Row(ISOLATED_LABEL, note="skipped: a private network namespace needs root")
    with deployed(session, root, True, args) as (platform, _port):
        note = "" if runner_is_isolated(platform) else "runner was NOT isolated (host network)"
        return measure_row(ISOLATED_LABEL, gateway_url(platform), args, note)


# -- the report -------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def added_p50(row: Row, direct: Row) -> float | None:
    if row is direct or row.seq is None or direct.seq is None:
        return None
    return row.seq.p50_ms - direct.seq.p50_ms


def rps_share(row: Row, direct: Row) -> float | None:
    if row.load is None or direct.load is None or not direct.load.rps:
        return None
    return row.load.rps / direct.load.rps


def row_cells(row: Row, direct: Row) -> list[str]:
    seq, load, share = row.seq, row.load, rps_share(row, direct)
    return [
        row.label,
        fmt(seq.p50_ms) if seq else "-",
        fmt(seq.p99_ms) if seq else "-",
        fmt(added_p50(row, direct)),
        fmt(load.rps, 0) if load else "-",
        "-" if share is None else f"{share:.0%}",
        f"{fmt(load.p50_ms)} / {fmt(load.p99_ms)}" if load else "-",
        row.note,
    ]


def render(rows: list[Row], args: argparse.Namespace) -> None:
    direct = rows[0]
    table = Table(
        title=f"tidal gateway overhead: {args.requests} sequential requests on one connection; "
        f"{args.connections} connections for {args.duration:g} s ({args.load_generator}); "
        f"max_multiplexing={args.max_multiplexing or '1 (default)'}"
    )
    table.add_column("path", no_wrap=True)
    for name in (
        "seq p50 ms",
        "seq p99 ms",
        "added p50 ms",
        f"req/s @{args.connections}",
        "% of direct req/s",
        f"@{args.connections} p50 / p99 ms",
    ):
        table.add_column(name, justify="right")
    table.add_column("note")
    for row in rows:
        table.add_row(*row_cells(row, direct))
    console.print(table)
    render_targets(rows[1:], direct)


def verdict(ok: bool) -> str:
    return "[green]PASS[/]" if ok else "[red]MISS[/]"


def render_targets(gateway_rows: list[Row], direct: Row) -> None:
    console.print(
        f"target: added p50 <= {TARGET_ADDED_P50_MS} ms, >= {TARGET_RPS_SHARE:.0%} of direct req/s"
    )
    for row in gateway_rows:
        added, share = added_p50(row, direct), rps_share(row, direct)
        if added is None or share is None:
            console.print(f"  {row.label}: not measured ({row.note})")
            continue
        console.print(
            f"  {row.label}: added p50 {added:.3f} ms {verdict(added <= TARGET_ADDED_P50_MS)}, "
            f"{share:.0%} of direct req/s {verdict(share >= TARGET_RPS_SHARE)}"
        )


# -- main ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="What tidal's gateway adds on top of a trivial upstream."
    )
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per row")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of concurrent load")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument(
        "--load-generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="wrk if installed (auto), or the Python asyncio fallback",
    )
    parser.add_argument(
        "--max-multiplexing",
        type=int,
        default=None,
        help="add max_multiplexing=N to the app (default: unset, tidal's default of 1 "
        "request at a time per runner, so the gateway queues the other connections)",
    )
    parser.add_argument(
        "--skip-isolated", action="store_true", help="leave out the isolation-on gateway row"
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.connections < 1 or args.duration <= 0:
        parser.error("--requests and --connections must be >= 1 and --duration > 0")
    return args


def run(args: argparse.Namespace, session: Session) -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix="tidal-bench-"))
    session.temp_dirs.append(root)
    rows = measure_shared(session, root, args)
    if args.skip_isolated:
        rows.append(Row(ISOLATED_LABEL, note="skipped (--skip-isolated)"))
    else:
        try:
            rows.append(measure_isolated(session, root, args))
        except BenchError as exc:
            console.print(f"[red]the isolation-on row failed:[/] {exc}")
            first = str(exc).splitlines()[0]
            rows.append(Row(ISOLATED_LABEL, note=f"failed: {first}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    session = Session()
    try:
        args.load_generator = pick_load_generator(args.load_generator)
        rows = run(args, session)
    except BenchError as exc:
        console.print(f"[bold red]benchmark failed:[/] {exc}")
        return 1
    except KeyboardInterrupt:
        console.print("interrupted; cleaning up")
        return 130
    finally:
        cleanup(session)
    render(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
