"""`make run`: start an embedded platform, deploy the direct-server example, call it.

The platform runs on a free port with a temporary data directory and stops at
the end, taking its runners with it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console

from tidal.testing import start_platform

EXAMPLE = Path(__file__).parent / "direct_server"


def main() -> None:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="tidal-example-") as tmp:
        with console.status("Starting the embedded platform…"):
            platform = start_platform(Path(tmp))
            running = platform.__enter__()
        try:
            console.print(f"[green]✓[/] platform at {running.url}")
            console.print("$ tidal deploy app.py::run_server", style="bold")
            console.print(running.cli("deploy", "app.py::run_server", cwd=EXAMPLE).stdout.rstrip())
            url = f"{running.url}/local/run-server/"
            console.print(f"$ curl {url}   (the first call starts a runner)", style="bold")
            with httpx.Client(timeout=120) as http:
                started = time.perf_counter()
                resp = http.get(url)
                cold = time.perf_counter() - started
                console.print(
                    f"HTTP {resp.status_code} {resp.text}  [dim](cold start {cold:.2f}s)[/]"
                )
                started = time.perf_counter()
                resp = http.get(url)
                warm = (time.perf_counter() - started) * 1000
                console.print(f"HTTP {resp.status_code} {resp.text}  [dim](warm {warm:.1f} ms)[/]")
            console.print(running.cli("runners", "list").stdout.rstrip())
            resp.raise_for_status()
        finally:
            with console.status("Stopping the platform and its runners…"):
                platform.__exit__(None, None, None)
    console.print("[green]✓[/] done")


if __name__ == "__main__":
    main()
