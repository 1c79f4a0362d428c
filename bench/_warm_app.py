"""What the benches that measure the control plane against a warm runner share
(control_plane_scale, queue_throughput, gateway_replicas): the raw-ASGI app they deploy
(no framework in the runner, so the numbers are the platform's), the roomy host TOML,
the data dirs, and a platform started with that app deployed.

The benches import it as `from _warm_app import ...`: `python bench/x.py` puts bench/
first on sys.path.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from tidal.backends.local import LocalBackend, free_port
from tidal.testing import PlatformProcess, start_platform

# Roomy, as in tests/conftest.py: placement never makes a request wait for CPUs.
ROOMY_TOML = "[host]\ncpus = 64\nmemory_mb = 131072\n"
# The response body, as a Python expression evaluated per request in the runner.
OK_BODY = "b'{\"ok\":true}'"
# The runner's id (its pid would be its sandbox's, which the host does not know).
WHO_BODY = 'json.dumps({"runner": os.environ.get("TIDAL_RUNNER_ID", "")}).encode()'
# What a failed run raises: the bench prints it and exits 1 instead of a traceback.
BENCH_ERRORS = (AssertionError, httpx.HTTPError, OSError, KeyError)

_ASGI = """\
import json, os, time
import tidal

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = {body}
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]}})
    await send({{"type": "http.response.body", "body": body}})
"""
_SERVER = """
@tidal.function(exposed_port={port}, {options})
def {name}():
    import uvicorn
    uvicorn.run(asgi, host="{host}", port={port}, log_level="warning", access_log=False)
"""

console = Console(width=None if sys.stdout.isatty() else 150)


@dataclass(frozen=True)
class WarmServer:
    """One `@tidal.function` direct server in the app serving `asgi` on a free port."""

    name: str
    options: str  # the decorator's keyword arguments after exposed_port
    host: str = "127.0.0.1"


def app_source(servers: Sequence[WarmServer], body: str = OK_BODY, extra: str = "") -> str:
    """The app file: the ASGI app answering `body`, then each server, then `extra`."""
    out = _ASGI.format(body=body)
    for s in servers:
        out += _SERVER.format(port=free_port(), options=s.options, name=s.name, host=s.host)
    return out + extra


def write_app(root: Path, source: str) -> Path:
    """root/app/app.py holding `source`; returns the folder to deploy from."""
    app_dir = root / "app"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(source)
    return app_dir


def data_dir(path: Path, toml: str = ROOMY_TOML) -> Path:
    path.mkdir()
    (path / "tidal.toml").write_text(toml)
    return path


def replica_dirs(root: Path, toml: str = ROOMY_TOML) -> list[Path]:
    """Data dirs root/a and root/b for two platform replicas. Code bundles live in the
    data dir: replicas share that folder (a shared filesystem in production), as they
    share the database."""
    dirs = [data_dir(root / name, toml) for name in "ab"]
    (dirs[0] / "bundles").mkdir()
    (dirs[1] / "bundles").symlink_to(dirs[0] / "bundles")
    return dirs


@contextlib.contextmanager
def warm_platform(
    source: str, functions: Sequence[str]
) -> Iterator[tuple[PlatformProcess, list[dict[str, Any]]]]:
    """A platform (no isolation, no sandbox) in a temp dir with `functions` of `source`
    deployed; yields it and each deploy's JSON view. Reaps runners left behind."""
    with tempfile.TemporaryDirectory(prefix="tidal-bench-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        app_dir = write_app(root, source)
        data = data_dir(root / "data")
        try:
            with start_platform(data, ["--isolation", "off", "--sandbox", "off"]) as platform:
                views = [
                    json.loads(platform.cli("deploy", f"app.py::{name}", "--json",
                                            cwd=app_dir).stdout)
                    for name in functions
                ]  # fmt: skip
                yield platform, views
        finally:
            LocalBackend(data / "runners").reap_orphans()


def run_on_warm_platform(
    source: str,
    functions: Sequence[str],
    measure: Callable[[PlatformProcess, list[dict[str, Any]]], list[Table]],
) -> int:
    """The bench's exit status: 0 with `measure`'s tables printed, or 1 with the error."""
    try:
        with warm_platform(source, functions) as (platform, views):
            tables = measure(platform, views)
    except BENCH_ERRORS as exc:
        console.print(f"[bold red]benchmark failed:[/] {exc!r}")
        return 1
    for table in tables:
        console.print(table)
    return 0


def pct(values: list[float], q: float) -> float:
    """The q-quantile of `values` (seconds), in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
