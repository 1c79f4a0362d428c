"""The CLI starts fast: a command imports only what it uses (`python -X importtime`)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tidal.cli.lazy import load_command
from tidal.cli.main import RootGroup

# The server's stack: a CLI command that is not `tidal server` never needs them.
HEAVY = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "pydantic")


def imported_by(*args: str, env: dict[str, str] | None = None) -> tuple[set[str], str]:
    """The top-level packages `tidal ARGS` imports, and its output."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tidal", *args],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "TIDAL_URL": "http://127.0.0.1:9", **(env or {})},
    )  # fmt: skip
    modules = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return modules, done.stdout + done.stderr


def test_importing_the_cli_pulls_in_no_server_library() -> None:
    code = "import sys, tidal.cli.main; print(sorted({m.split('.')[0] for m in sys.modules}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout.replace("'", '"')))
    assert not loaded & {*HEAVY, "httpx", "rich"}, sorted(loaded & {*HEAVY, "httpx", "rich"})


@pytest.mark.parametrize(
    "args",
    [
        ("version",),
        ("--help",),
        ("apps", "--help"),
        ("apps", "list", "--limit", "5"),
        ("runners", "list"),
    ],
)
def test_everyday_commands_import_no_server_library(args: tuple[str, ...]) -> None:
    modules, output = imported_by(*args)
    assert not modules & set(HEAVY), (sorted(modules & set(HEAVY)), output)


@pytest.mark.parametrize(
    ("given", "said"),
    [("0", "0 is not in the range 1<=x<=1000"), ("x", "'x' is not a valid integer"),
     ("1001", "1001 is not in the range 1<=x<=1000")],
)  # fmt: skip
def test_integer_options_still_checked_without_pydantic(given: str, said: str) -> None:
    modules, output = imported_by("apps", "list", "--limit", given)
    assert said in output and "--limit" in output
    assert "pydantic" not in modules


def test_version_and_help_need_no_http_client() -> None:
    for args in (("version",), ("--help",)):
        modules, output = imported_by(*args)
        assert "httpx" not in modules, output


def test_lazy_commands_summaries_are_their_help() -> None:
    """`tidal --help` shows a lazy command's summary without importing it: it must match."""
    for name, lazy in RootGroup.lazy.items():
        command = load_command(name, lazy)
        assert command.name == name
        assert inspect.cleandoc(command.help or "") == lazy.summary, name


def test_help_lists_every_command_and_each_one_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tidal", "--help"], capture_output=True, text=True, check=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    for name in RootGroup.lazy:
        assert f" {name} " in done.stdout
        sub = subprocess.run(
            [sys.executable, "-m", "tidal", name, "--help"], capture_output=True, text=True,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert sub.returncode == 0, sub.stderr
        assert f"Usage: tidal {name} [OPTIONS]" in sub.stdout


def test_server_help_keeps_the_postgres_extra() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tidal", "server", "--help"], capture_output=True, text=True,
        check=True, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert "pip install 'tidal[postgres]'" in " ".join(done.stdout.split())


def test_server_refuses_isolation_off_with_the_sandbox_on(tmp_path: Path) -> None:
    # Sandboxed runners always get their own network namespace: a silent no-op would let an
    # operator believe runners share the host's network.
    done = subprocess.run(
        [sys.executable, "-m", "tidal", "server", "--data-dir", str(tmp_path), "--port", "1",
         "--isolation", "off"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert done.returncode != 0
    message = " ".join((done.stdout + done.stderr).split())
    assert "--isolation off" in message and "add --sandbox off" in message


RUNNER = {
    "id": "r-0123456789abcdef0123456789abcdef", "app": "an-app-with-a-rather-long-name",
    "revision": 12, "machine_type": "GPU-H100-LARGE", "gpus": ["0", "1"], "state": "ready",
    "in_flight": 3, "served": 123456, "created_at": None,
    "reason": "replaced by revision 13 (rolled out ready-first)",
}  # fmt: skip


@pytest.fixture
def fake_api() -> Iterator[str]:
    """Only the JSON `runners list` reads: this test is about how the CLI prints it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps([RUNNER]).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_runners_list_does_not_wrap_when_not_on_a_terminal(fake_api: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run(
        [sys.executable, "-m", "tidal", "--url", fake_api, "runners", "list"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    row = next(line for line in done.stdout.splitlines() if RUNNER["id"] in line)
    assert RUNNER["app"] in row and RUNNER["reason"] in row
    assert len(row) > 80
