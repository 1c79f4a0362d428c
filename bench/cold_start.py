"""Cold start on the local backend: a request to an app with zero runners, until its response.

Each trial stops the app's runner, then sends one request on a fresh connection. The
generated app marks (time.time(), into a file) when its module starts importing, around
`import tidal` and the decorator, when the function body starts and when its server
listens; the platform's runner pid file gives the spawn time. Everything but the user's
own imports and server start is platform overhead:

    request -> spawned      gateway queue, scaling loop wake-up, fork+exec of the runtime
    spawned -> app.py       interpreter start, tidal.runtime imports, netns, loading the entry
    SDK                     `import tidal` and @tidal.function in app.py (pydantic, validation)
    listening -> response   readiness polling, then proxying the request itself

    .venv/bin/python bench/cold_start.py [--trials N] [--skip-isolated] [--docker | --docker-only]
    .venv/bin/python bench/cold_start.py --burst 3   # a burst: one template against three

Rows: `sandbox` (the default: each runner in its app's sandbox), `auto` and `off`
(`--sandbox off`, with and without a private network namespace); the sandbox's cost is
the difference of the p50 totals of `sandbox` and `auto`, measured in the same run.

With --docker (as root, Debian's docker.io and debootstrap installed) it also starts a
private dockerd (tidal.testing_docker) and measures the docker backend, split as

    request -> container started   gateway, scaling, image lookup, `docker create` + start
    container -> app.py import     the image's Python starting tidal.runtime
    setup                          app.py import -> its server listening (SDK, user code)
    listening -> response          readiness polling, then proxying the request

against a plain `docker run` of the same image to its first HTTP answer, measured in the
same run: the platform's overhead is what tidal adds beyond that.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.table import Table

from tidal.backends.local import LocalBackend, free_port
from tidal.testing import PlatformProcess, start_platform, wait_for

FUNCTION_NAME = "cold_start"
TARGET_OVERHEAD_MS = 100.0
WAIT_TIMEOUT_S = 60.0

APP_PY = """\
import time
MARKS = {marks!r}
def mark(what):
    with open(MARKS, "a") as f:
        f.write(f"{{what}} {{time.time()!r}}\\n")
mark("import")
import tidal
mark("sdk")
import http.server, signal, threading

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass

mark("decorate")
@tidal.function(exposed_port={port}, keep_alive=1, max_concurrency=1)
def {name}():
    mark("entry")
    server = http.server.ThreadingHTTPServer(("0.0.0.0", {port}), Handler)
    mark("listen")
    previous = signal.getsignal(signal.SIGTERM)
    def on_term(signum, frame):  # the runtime's handler, then a prompt exit
        previous(signum, frame)
        threading.Thread(target=server.shutdown).start()
    signal.signal(signal.SIGTERM, on_term)
    server.serve_forever()
mark("loaded")
"""

# Key, label. The user's own time is "user imports" and "server start"; the rest, the SDK
# (`import tidal`, the decorator) included, is the platform's.
STAGES = (
    ("total", "total (request -> response)"),
    ("to_spawn", "  request -> runner spawned"),
    ("to_import", "  spawned -> app.py import begins"),
    ("sdk", "  import tidal + @tidal.function"),
    ("user_import", "  user imports (user)"),
    ("to_entry", "  app.py loaded -> function entry"),
    ("server_start", "  server start (user)"),
    ("to_response", "  listening -> response"),
    ("to_user", "request -> app.py import begins"),
    ("overhead", "platform overhead"),
)

console = Console(width=None if sys.stdout.isatty() else 150)


@dataclass
class Row:
    label: str
    trials: list[dict[str, float]]
    note: str = ""


def live_runners(platform: PlatformProcess, app: str) -> list[dict[str, object]]:
    runners = httpx.get(f"{platform.url}/api/v1/apps/{app}/runners", timeout=10).json()
    return [
        r
        for r in runners
        if r["state"] in ("pending", "setup", "idle", "running", "draining", "terminating")
    ]


def stop_all(platform: PlatformProcess, app: str) -> None:
    for runner in live_runners(platform, app):
        httpx.post(f"{platform.url}/api/v1/runners/{runner['id']}/stop", timeout=30)
    wait_for(lambda: not live_runners(platform, app), WAIT_TIMEOUT_S, 0.02, "no live runners")


def cold_request(url: str) -> tuple[float, float]:
    """One GET on a fresh connection; time.time() before sending and after the full body."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    t0 = time.time()
    with socket.create_connection((host, port), timeout=WAIT_TIMEOUT_S) as sock:
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            lengths = [h for h in head.lower().split(b"\r\n") if h.startswith(b"content-length:")]
            if sep and lengths and len(body) >= int(lengths[0].split(b":")[1]):
                break
    t1 = time.time()
    if not data.startswith(b"HTTP/1.1 200"):
        raise AssertionError(f"the cold request answered {data[:800]!r}")
    return t0, t1


def trial(platform: PlatformProcess, app: str, url: str, marks: Path) -> dict[str, float]:
    stop_all(platform, app)
    marks.unlink(missing_ok=True)
    t0, t1 = cold_request(url)
    (runner,) = live_runners(platform, app)
    # Written right after fork+exec returned; mtime has the kernel's coarse clock (a tick).
    spawned = (platform.data_dir / "runners" / f"{runner['id']}.pid").stat().st_mtime
    m = {k: float(v) for k, v in (line.split() for line in marks.read_text().splitlines())}
    user_import = m["decorate"] - m["sdk"]  # the app's own imports and definitions
    server_start = m["listen"] - m["entry"]
    ms = {
        "total": t1 - t0,
        "to_spawn": spawned - t0,
        "to_import": m["import"] - spawned,
        "sdk": (m["sdk"] - m["import"]) + (m["loaded"] - m["decorate"]),
        "user_import": user_import,
        "to_entry": m["entry"] - m["loaded"],
        "server_start": server_start,
        "to_response": t1 - m["listen"],
        "to_user": m["import"] - t0,
        "overhead": (t1 - t0) - user_import - server_start,
    }
    return {k: v * 1000 for k, v in ms.items()}


# A row's label -> `tidal server` flags. "sandbox": the default (each runner in its app's
# sandbox); "auto" and "off": --sandbox off, with and without a private network namespace.
MODES = {
    "sandbox": ["--sandbox", "on"],
    "auto": ["--sandbox", "off", "--isolation", "auto"],
    "off": ["--sandbox", "off", "--isolation", "off"],
}
SANDBOX_TARGET_MS = 20.0


@contextlib.contextmanager
def deployed(root: Path, isolation: str) -> Iterator[tuple[PlatformProcess, str, str, Path]]:
    app_dir, data_dir = root / f"app-{isolation}", root / f"data-{isolation}"
    app_dir.mkdir()
    data_dir.mkdir()
    # In /data: the one folder of the host a sandboxed runner can write.
    marks = data_dir / "data" / "marks.txt"
    marks.parent.mkdir()  # `tidal deploy` imports app.py here, which marks too
    inside = "/data/marks.txt" if isolation == "sandbox" else str(marks)
    source = APP_PY.format(marks=inside, port=free_port(), name=FUNCTION_NAME)
    (app_dir / "app.py").write_text(source)
    with contextlib.ExitStack() as stack:
        # If start_platform's SIGINT did not stop the runners (a second Ctrl-C), kill them.
        stack.callback(reap_runners, data_dir)
        # This table splits a fresh process's start; templates have their own rows below.
        (data_dir / "tidal.toml").write_text("runner_templates = false\n")
        platform = stack.enter_context(start_platform(data_dir, MODES[isolation]))
        view = json.loads(
            platform.cli("deploy", f"app.py::{FUNCTION_NAME}", "--json", cwd=app_dir).stdout
        )
        yield platform, view["name"], view["url"].rstrip("/") + "/", marks


def reap_runners(data_dir: Path) -> None:
    if reaped := LocalBackend(data_dir / "runners").reap_orphans():
        console.print(f"[red]{reaped} runner group(s) outlived their platform; killed them")


def measure(root: Path, isolation: str, args: argparse.Namespace) -> Row:
    console.print(
        f"{' '.join(MODES[isolation])}: {args.warmup} warm-up + {args.trials} cold starts"
    )
    with deployed(root, isolation) as (platform, app, url, marks):
        warm = [trial(platform, app, url, marks) for _ in range(args.warmup)]
        trials = []
        for _ in range(args.trials):
            trials.append(trial(platform, app, url, marks))
            isolated = any(r["isolated_network"] for r in live_runners(platform, app))
        stop_all(platform, app)
    notes = [f"runner {'in a private netns' if isolated else 'on the host network'}"]
    notes += [f"warm-up total {w['total']:.0f} ms" for w in warm]
    return Row(isolation, trials, "; ".join(notes))


def render(rows: list[Row], args: argparse.Namespace) -> None:
    title = f"tidal cold start, local backend, sandbox on / off: ms, {args.trials} trials"
    table = Table(title=title)
    table.add_column("stage", no_wrap=True)
    for row in rows:
        for stat in ("p50", "min", "max"):
            table.add_column(f"{row.label} {stat}", justify="right")
    for key, label in STAGES:
        cells = []
        for row in rows:
            values = [t[key] for t in row.trials]
            cells += [
                f"{statistics.median(values):.1f}",
                f"{min(values):.1f}",
                f"{max(values):.1f}",
            ]
        style = "bold" if key in ("total", "overhead") else None
        table.add_row(label, *cells, style=style)
    console.print(table)
    for row in rows:
        console.print(f"  {' '.join(MODES[row.label])}: {row.note}")
    console.print(f"target: platform overhead p50 < {TARGET_OVERHEAD_MS:.0f} ms")
    for row in rows:
        p50 = statistics.median(t["overhead"] for t in row.trials)
        ok = "[green]PASS[/]" if p50 < TARGET_OVERHEAD_MS else "[red]MISS[/]"
        console.print(f"  {' '.join(MODES[row.label])}: {p50:.1f} ms {ok}")
    by_label = {row.label: row for row in rows}
    if "sandbox" in by_label and "auto" in by_label:  # the same run, the same app
        cost = statistics.median(
            t["total"] for t in by_label["sandbox"].trials
        ) - statistics.median(t["total"] for t in by_label["auto"].trials)
        ok = "[green]PASS[/]" if cost <= SANDBOX_TARGET_MS else "[red]MISS[/]"
        console.print(
            f"sandbox cost (p50 total, sandbox on - off with a private netns): {cost:.1f} ms "
            f"{ok} (target <= {SANDBOX_TARGET_MS:.0f} ms)"
        )


DOCKERFILE = "FROM tidal-test/debian-python:bookworm\n"
DOCKER_TARGET_MS = 300.0
DOCKER_STAGES = (
    ("total", "total (request -> response)"),
    ("to_container", "  request -> container started"),
    ("runtime_start", "  container -> app.py import begins"),
    ("setup", "  setup: app.py import -> listening"),
    ("to_response", "  listening -> response"),
    ("docker_run", "plain `docker run` -> first answer"),
    ("overhead", "overhead beyond docker run"),
    ("app_total", "tidal.App in a container: total"),
    ("app_overhead", "  App overhead beyond docker run"),
)
# A tidal.App beside the direct server, in the same image: its runtime says when it
# listens (a line the backend reads from the container's log stream).
DOCKER_APP = """

class ColdApp(tidal.App, keep_alive=300, image=tidal.ContainerImage.from_dockerfile_str({dockerfile!r})):
    @tidal.endpoint("/", method="GET")
    def hello(self) -> dict:
        return {{"ok": True}}
"""
PLAIN_SERVER = (
    "import http.server as h\n"
    "class H(h.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.send_header('Content-Length', '2')\n"
    "        self.end_headers(); self.wfile.write(b'ok')\n"
    "h.HTTPServer(('0.0.0.0', 8000), H).serve_forever()\n"
)


def _started_at(value: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as time.time()."""
    from datetime import datetime

    stamp, _, frac = value.rstrip("Z").partition(".")
    whole = datetime.fromisoformat(stamp + "+00:00").timestamp()
    return whole + float(f"0.{frac or 0}")


def plain_docker_run(client: object, image: str) -> float:
    """A plain `docker run -p 127.0.0.1:P:8000` of `image`, until its first HTTP answer (s)."""
    port = free_port()
    t0 = time.time()
    container = client.containers.run(  # type: ignore[attr-defined]
        image, ["python3", "-c", PLAIN_SERVER], detach=True,
        ports={"8000/tcp": ("127.0.0.1", port)}, init=True,
    )  # fmt: skip
    try:
        while True:
            with contextlib.suppress(OSError, httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                    return time.time() - t0
            if time.time() - t0 > WAIT_TIMEOUT_S:
                raise AssertionError("the plain container never answered")
            time.sleep(0.005)
    finally:
        container.remove(force=True)


def docker_app_trial(platform: PlatformProcess, app: str, url: str) -> tuple[float, str]:
    """The App's cold start (s), and how the platform learned it was ready."""
    stop_all(platform, app)
    t0, t1 = cold_request(url)
    (runner,) = live_runners(platform, app)
    stop_all(platform, app)
    return t1 - t0, str(runner.get("ready_from", "?"))


def docker_trial(
    platform: PlatformProcess, client: object, app: str, url: str, marks: Path
) -> dict[str, float]:
    stop_all(platform, app)
    marks.unlink(missing_ok=True)
    t0, t1 = cold_request(url)
    (container,) = client.containers.list(filters={"label": f"tidal.app={app}"})  # type: ignore[attr-defined]
    started = _started_at(container.attrs["State"]["StartedAt"])
    image = container.image.tags[0]
    m = {k: float(v) for k, v in (line.split() for line in marks.read_text().splitlines())}
    stop_all(platform, app)
    plain = plain_docker_run(client, image)
    ms = {
        "total": t1 - t0,
        "to_container": started - t0,
        "runtime_start": m["import"] - started,
        "setup": m["listen"] - m["import"],
        "to_response": t1 - m["listen"],
        "docker_run": plain,
        "overhead": (t1 - t0) - plain,
    }
    return {k: v * 1000 for k, v in ms.items()}


def measure_docker(root: Path, args: argparse.Namespace) -> Row:
    import docker

    from tidal.testing_docker import docker_engine

    console.print(f"docker backend: {args.warmup} warm-up + {args.trials} cold starts")
    app_dir, data_dir = root / "app-docker", root / "data-docker"
    app_dir.mkdir()
    data_dir.mkdir()
    marks = data_dir / "data" / "marks.txt"  # /data/marks.txt inside the container
    source = APP_PY.format(marks="/data/marks.txt", port=8000, name=FUNCTION_NAME).replace(
        "@tidal.function(",
        f"@tidal.function(image=tidal.ContainerImage.from_dockerfile_str({DOCKERFILE!r}), ",
    )
    (app_dir / "app.py").write_text(source + DOCKER_APP.format(dockerfile=DOCKERFILE))
    with contextlib.ExitStack() as stack:
        engine = stack.enter_context(docker_engine())
        client = docker.DockerClient(base_url=engine.host)
        stack.callback(client.close)
        platform = stack.enter_context(start_platform(data_dir, env=engine.env))
        started = time.monotonic()
        view = json.loads(
            platform.cli("deploy", f"app.py::{FUNCTION_NAME}", "--json", cwd=app_dir).stdout
        )
        built = time.monotonic() - started
        started = time.monotonic()
        platform.cli("deploy", f"app.py::{FUNCTION_NAME}", "--json", cwd=app_dir)
        cached = time.monotonic() - started
        app, url = view["name"], view["url"].rstrip("/") + "/"
        app_view = json.loads(
            platform.cli("deploy", "app.py::ColdApp", "--json", cwd=app_dir).stdout
        )
        cold_app, app_url = app_view["name"], app_view["url"].rstrip("/") + "/"
        warm = [docker_trial(platform, client, app, url, marks) for _ in range(args.warmup)]
        for _ in range(args.warmup):
            docker_app_trial(platform, cold_app, app_url)
        trials, ready_from = [], set()
        for _ in range(args.trials):
            trials.append(docker_trial(platform, client, app, url, marks))
            seconds, learned = docker_app_trial(platform, cold_app, app_url)
            ready_from.add(learned)
            trials[-1]["app_total"] = seconds * 1000
            trials[-1]["app_overhead"] = trials[-1]["app_total"] - trials[-1]["docker_run"]
        stop_all(platform, app)
    notes = [f"first deploy (image build) {built:.1f} s", f"redeploy (cache hit) {cached:.2f} s"]
    notes.append(f"App runners ready from: {', '.join(sorted(ready_from))}")
    notes += [f"warm-up total {w['total']:.0f} ms" for w in warm]
    return Row("docker", trials, "; ".join(notes))


def render_docker(row: Row, args: argparse.Namespace) -> None:
    table = Table(title=f"tidal cold start, docker backend: ms, {args.trials} trials")
    table.add_column("stage", no_wrap=True)
    for stat in ("p50", "min", "max"):
        table.add_column(stat, justify="right")
    for key, label in DOCKER_STAGES:
        values = [t[key] for t in row.trials]
        cells = [f"{statistics.median(values):.1f}", f"{min(values):.1f}", f"{max(values):.1f}"]
        style = "bold" if key in ("total", "overhead") else None
        table.add_row(label, *cells, style=style)
    console.print(table)
    console.print(f"  {row.note}")
    p50 = statistics.median(t["overhead"] for t in row.trials)
    ok = "[green]PASS[/]" if p50 < DOCKER_TARGET_MS else "[red]MISS[/]"
    console.print(f"target: overhead beyond docker run p50 < {DOCKER_TARGET_MS:.0f} ms: "
                  f"{p50:.1f} ms {ok}")  # fmt: skip


# -- first response against a bare process start, in one run --------------------------
# Each scenario: an app at zero runners on its own platform, one cold request per trial
# (total ms). The baseline is `python -m uvicorn` serving a trivial ASGI app, spawn to its
# first 200. Add a row by adding a Scenario (the platform's TOML settings say what differs).

BARE_ASGI = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
"""
TRIVIAL_APP = """\
import tidal

class Hello(tidal.App, keep_alive=300):
    @tidal.endpoint("/", method="GET")
    def hello(self) -> dict:
        return {"ok": True}
"""
HEAVY_SERVER = """\
import numpy, pandas
import http.server, signal, threading
import tidal

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(pandas.Series(numpy.arange(3)).sum()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

@tidal.function(exposed_port={port}, keep_alive=300, max_concurrency=1)
def heavy():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", {port}), Handler)
    previous = signal.getsignal(signal.SIGTERM)
    def on_term(signum, frame):
        previous(signum, frame)
        threading.Thread(target=server.shutdown).start()
    signal.signal(signal.SIGTERM, on_term)
    server.serve_forever()
"""
TEMPLATES_OFF = "runner_templates = false\n"
SANDBOX_TEMPLATE = "tidal.App from a template, in the sandbox"


@dataclass(frozen=True)
class Scenario:
    label: str
    source: str  # app.py; "{port}" becomes a free port
    entry: str
    toml: str = ""  # the platform's DATA_DIR/tidal.toml
    # Unsandboxed unless said: these rows compare with the earlier, unsandboxed ones.
    flags: tuple[str, ...] = ("--sandbox", "off", "--isolation", "off")
    from_template: bool = False  # each cold start waits for the template to be ready


SCENARIOS = (
    Scenario(
        "tidal.App, fresh process, in the sandbox",
        TRIVIAL_APP,
        "app.py::Hello",
        TEMPLATES_OFF,
        flags=("--sandbox", "on"),
    ),
    Scenario(
        SANDBOX_TEMPLATE,
        TRIVIAL_APP,
        "app.py::Hello",
        flags=("--sandbox", "on"),
        from_template=True,
    ),
    Scenario("tidal.App, fresh process", TRIVIAL_APP, "app.py::Hello", TEMPLATES_OFF),
    Scenario("tidal.App, from a template", TRIVIAL_APP, "app.py::Hello", from_template=True),
    Scenario("numpy+pandas server, fresh process", HEAVY_SERVER, "app.py::heavy", TEMPLATES_OFF),
    Scenario(
        "numpy+pandas server, from a template", HEAVY_SERVER, "app.py::heavy", from_template=True
    ),
)


def first_200(cmd: list[str], port: int, cwd: Path) -> float:
    """Spawn `cmd`, then GET / on 127.0.0.1:port every ms until a 200: ms since spawn."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            with contextlib.suppress(OSError):
                status, _ = raw_get(port)
                if status == 200:
                    return (time.time() - t0) * 1000
            if proc.poll() is not None or time.time() - t0 > WAIT_TIMEOUT_S:
                raise AssertionError(f"{cmd} never answered 200")
            time.sleep(0.001)
    finally:
        proc.terminate()
        proc.wait()


def raw_get(port: int) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def import_ms(root: Path, modules: str, trials: int) -> float:
    """p50 of the time `import MODULES` takes in a fresh interpreter (the import alone)."""
    code = f"import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"

    def run() -> float:
        done = subprocess.run([sys.executable, "-c", code], check=True, cwd=root,
                              capture_output=True, text=True)  # fmt: skip
        return float(done.stdout) * 1000

    return statistics.median(run() for _ in range(trials))


def template_ready(platform: PlatformProcess) -> bool:
    return any((platform.data_dir / "runners" / "templates").glob("*.json"))


def measure_scenario(root: Path, scenario: Scenario, args: argparse.Namespace) -> list[float]:
    folder = root / f"scenario-{SCENARIOS.index(scenario)}"
    app_dir, data_dir = folder / "app", folder / "data"
    app_dir.mkdir(parents=True)
    data_dir.mkdir()
    (app_dir / "app.py").write_text(scenario.source.replace("{port}", str(free_port())))
    (data_dir / "tidal.toml").write_text(scenario.toml)
    console.print(f"{scenario.label}: {args.warmup} warm-up + {args.trials} cold starts")
    totals = []
    with contextlib.ExitStack() as stack:
        stack.callback(reap_runners, data_dir)
        platform = stack.enter_context(start_platform(data_dir, list(scenario.flags)))
        view = json.loads(platform.cli("deploy", scenario.entry, "--json", cwd=app_dir).stdout)
        app, url = view["name"], view["url"].rstrip("/") + "/"
        for n in range(args.warmup + args.trials):
            stop_all(platform, app)
            if scenario.from_template and n >= args.warmup:
                # Cold starts spaced out as in life: the template started after the last
                # one has finished importing.
                wait_for(lambda: template_ready(platform), WAIT_TIMEOUT_S, 0.02, "a template")
            t0, t1 = cold_request(url)
            if n >= args.warmup:
                totals.append((t1 - t0) * 1000)
        froms = {r["started_from"] for r in httpx.get(
            f"{platform.url}/api/v1/apps/{app}/runners", timeout=10).json()[-args.trials:]}  # fmt: skip
        stop_all(platform, app)
    console.print(f"  runners started from: {', '.join(sorted(froms))}")
    return totals


def measure_ratios(root: Path, args: argparse.Namespace) -> None:
    bare_dir = root / "bare"
    bare_dir.mkdir()
    (bare_dir / "asgi_app.py").write_text(BARE_ASGI)
    console.print(f"bare uvicorn: {args.trials} spawns")
    bare = [
        first_200(
            [sys.executable, "-m", "uvicorn", "asgi_app:app", "--port", str(port)], port, bare_dir
        )
        for port in [free_port() for _ in range(args.trials)]
    ]
    rows = {s.label: measure_scenario(root, s, args) for s in SCENARIOS}
    imports = import_ms(root, "numpy, pandas", args.trials)
    base = statistics.median(bare)
    table = Table(title=f"first response at zero runners: ms, {args.trials} trials, one run")
    for column in ("row", "p50", "min", "max", "x bare uvicorn"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for label, values in [("bare `python -m uvicorn`, spawn -> first 200", bare), *rows.items()]:
        p50 = statistics.median(values)
        table.add_row(label, f"{p50:.0f}", f"{min(values):.0f}", f"{max(values):.0f}",
                      f"{p50 / base:.2f}x")  # fmt: skip
    table.add_row("`import numpy, pandas` alone, in a fresh python", f"{imports:.0f}", "", "", "")
    console.print(table)
    app = statistics.median(rows["tidal.App, from a template"]) / base
    ok = "[green]PASS[/]" if app <= 1.0 else "[red]MISS[/]"
    console.print(f"target: trivial App <= 1.0x bare uvicorn (aim 0.5x): {app:.2f}x {ok}")
    sandboxed = statistics.median(rows[SANDBOX_TEMPLATE]) / base
    ok = "[green]PASS[/]" if sandboxed <= 1.0 else "[red]MISS[/]"
    console.print(
        f"target, in the sandbox: trivial App <= 1.0x bare uvicorn: {sandboxed:.2f}x {ok}"
    )
    cut = statistics.median(rows["numpy+pandas server, fresh process"]) - statistics.median(
        rows["numpy+pandas server, from a template"]
    )
    ok = "[green]PASS[/]" if cut >= 0.8 * imports else "[red]MISS[/]"
    console.print(f"target: numpy+pandas cold start cut >= 80% of its import time: "
                  f"{cut:.0f} ms of {imports:.0f} ms = {cut / imports:.0%} {ok}")  # fmt: skip


# -- a burst of cold requests: one template against a pool of them ---------------------
# N requests at once at zero runners, each holding its runner BURST_WORK_S (so a runner
# that is ready early cannot serve them all); the slowest response is what the burst's
# last user waits. Rows differ only in `runner_templates`.

BURST_APP = """\
import asyncio
import tidal

class Burst(tidal.App, keep_alive=300, max_concurrency={n}, runner_templates={pool}):
    @tidal.endpoint("/", method="GET")
    async def work(self) -> dict:
        await asyncio.sleep({work})
        return {{"ok": True}}
"""
BURST_WORK_S = 0.3


def templates_of(platform: PlatformProcess, app: str) -> int:
    found = 0
    for path in (platform.data_dir / "runners" / "templates").glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            found += json.loads(path.read_text())["app"] == app
    return found


def measure_burst(root: Path, n: int, pool: int, args: argparse.Namespace) -> list[float]:
    """The slowest of `n` simultaneous cold requests (ms), per trial."""
    from concurrent.futures import ThreadPoolExecutor

    folder = root / f"burst-{n}-{pool}"
    app_dir, data_dir = folder / "app", folder / "data"
    app_dir.mkdir(parents=True)
    data_dir.mkdir()
    (app_dir / "app.py").write_text(BURST_APP.format(n=n, pool=pool, work=BURST_WORK_S))
    (data_dir / "tidal.toml").write_text(f"[host]\ncpus = {2 * n}\nmemory_mb = 65536\n")
    console.print(f"burst of {n}, {pool} template(s): {args.warmup} warm-up + {args.trials} bursts")
    slowest, froms = [], []
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(n) as threads:
        stack.callback(reap_runners, data_dir)
        platform = stack.enter_context(start_platform(data_dir, ["--sandbox", "off"]))
        view = json.loads(platform.cli("deploy", "app.py::Burst", "--json", cwd=app_dir).stdout)
        app, url = view["name"], view["url"].rstrip("/") + "/"
        for k in range(args.warmup + args.trials):
            stop_all(platform, app)
            wait_for(lambda: templates_of(platform, app) >= pool, WAIT_TIMEOUT_S, 0.02, "templates")
            times = list(threads.map(lambda _: cold_request(url), range(n)))
            if k >= args.warmup:
                slowest.append((max(t1 for _, t1 in times) - min(t0 for t0, _ in times)) * 1000)
                froms += [str(r["started_from"]) for r in live_runners(platform, app)]
        stop_all(platform, app)
    templated = sum(f == "template" for f in froms)
    console.print(f"  runners: {len(froms)}, of which from a template: {templated}")
    return slowest


def render_burst(n: int, rows: dict[int, list[float]], args: argparse.Namespace) -> None:
    table = Table(title=f"a burst of {n} cold requests ({BURST_WORK_S:.1f} s each): slowest "
                        f"response, ms, {args.trials} bursts")  # fmt: skip
    for column in ("templates per revision", "p50", "min", "max", "x one template"):
        table.add_column(column, justify="left" if column.startswith("templates") else "right")
    base = statistics.median(rows[1])
    for pool, values in rows.items():
        p50 = statistics.median(values)
        table.add_row(str(pool), f"{p50:.0f}", f"{min(values):.0f}", f"{max(values):.0f}",
                      f"{p50 / base:.2f}x")  # fmt: skip
    console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Cold start time of the local backend.")
    parser.add_argument("--trials", type=int, default=10, help="cold starts per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed cold starts first")
    parser.add_argument("--skip-isolated", action="store_true", help="only the --isolation off row")
    parser.add_argument("--docker", action="store_true", help="also measure the docker backend")
    parser.add_argument("--docker-only", action="store_true", help="only the docker backend")
    parser.add_argument("--burst", type=int, default=0, metavar="N",
                        help="only: N cold requests at once, one template against N")  # fmt: skip
    parser.add_argument("--ratios-only", action="store_true",
                        help="only the first-response table against bare uvicorn")  # fmt: skip
    args = parser.parse_args(argv)
    if args.trials < 1 or args.warmup < 0:
        parser.error("--trials must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.burst:
        with tempfile.TemporaryDirectory(prefix="tidal-bench-", ignore_cleanup_errors=True) as tmp:
            bursts = {pool: measure_burst(Path(tmp), args.burst, pool, args)
                      for pool in (1, args.burst)}  # fmt: skip
        render_burst(args.burst, bursts, args)
        return 0
    modes = ["off"] if args.skip_isolated else ["sandbox", "auto", "off"]
    if args.docker_only or args.ratios_only:
        modes = []
    if "auto" in modes and os.geteuid() != 0:
        console.print("[yellow]not root: with --isolation auto, runners share the host network")
        modes.remove("sandbox")  # the platform refuses local runners without it
    with tempfile.TemporaryDirectory(prefix="tidal-bench-", ignore_cleanup_errors=True) as tmp:
        try:
            rows = [measure(Path(tmp), mode, args) for mode in modes]
            if not args.docker_only:
                measure_ratios(Path(tmp), args)
            docker_row = (
                measure_docker(Path(tmp), args) if args.docker or args.docker_only else None
            )
        except (AssertionError, httpx.HTTPError, OSError, KeyError) as exc:
            console.print(f"[bold red]benchmark failed:[/] {exc}")
            return 1
        except KeyboardInterrupt:
            console.print("interrupted; the platforms were stopped")
            return 130
    if rows:
        render(rows, args)
    if docker_row is not None:
        render_docker(docker_row, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
