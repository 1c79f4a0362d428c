"""`tidal run`: an ephemeral app for the developer's loop, on an embedded platform if need be."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from tidal.cli.client import Client, CLIError
from tidal.cli.deploy import deploy
from tidal.config import DEFAULT_HOST


@contextlib.contextmanager
def embedded_platform(api: Client, console: Console) -> Iterator[Client]:
    """`api` when a platform answers there, else one started for this session (and stopped)."""
    if api.reachable():
        yield api
        return
    data_dir = tempfile.mkdtemp(prefix="tidal-run-")
    from tidal.backends.local import free_port

    port = free_port()
    with console.status("Starting an embedded platform…"):
        with (Path(data_dir) / "platform.log").open("wb") as platform_log:
            platform = subprocess.Popen(
                [sys.executable, "-m", "tidal", "server", "--port", str(port), "--data-dir", data_dir, "--no-auth"],
                stdout=subprocess.DEVNULL, stderr=platform_log,
                start_new_session=True,  # Ctrl-C reaches us; we stop it once
            )  # fmt: skip
        local = Client(f"http://{DEFAULT_HOST}:{port}")
        try:
            deadline = time.monotonic() + 30
            while not local.reachable():
                if platform.poll() is not None or time.monotonic() > deadline:
                    raise CLIError(
                        f"the embedded platform did not start; see {data_dir}/platform.log"
                    )
                time.sleep(0.1)
        except BaseException:
            _stop(platform, data_dir)
            raise
    try:
        yield local
    finally:
        _stop(platform, data_dir)


def _stop(platform: subprocess.Popen[bytes], data_dir: str) -> None:
    platform.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        platform.wait(30)
    if platform.poll() is None:
        platform.kill()
        platform.wait()
    shutil.rmtree(data_dir, ignore_errors=True)


def run_app(api: Client, target: str, app_name: str | None, console: Console) -> None:
    """Deploy `target`, stream its logs until Ctrl-C, then delete it."""
    with embedded_platform(api, console) as api:
        view: dict[str, Any] | None = None
        try:
            view = deploy(api, target, app_name, console)
            console.print(
                f"[green]✓[/] Running [bold]{view['name']}[/] at [bold]{view['url']}[/]  (Ctrl-C to stop)"
            )
            for line in api.stream_lines(
                f"/api/v1/apps/{view['name']}/logs", {"follow": True, "lines": 0}
            ):
                print(line, flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            if view is not None:
                with contextlib.suppress(CLIError):
                    api.delete(f"/api/v1/apps/{view['name']}")
                    console.print(f"Removed {view['name']}.")
