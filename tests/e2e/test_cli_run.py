"""`tidal run`: an ephemeral app on an embedded platform the command starts itself."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tidal.backends.local import free_port
from tidal.testing import wait_for

pytestmark = pytest.mark.slow


def test_run_starts_a_platform_deploys_serves_and_cleans_up() -> None:
    env = {**os.environ, "TIDAL_URL": f"http://127.0.0.1:{free_port()}", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidal", "run", "app.py::run_server"],
        cwd=Path(__file__).parents[2] / "examples" / "direct_server", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        url = wait_for(
            lambda: next((m.group(1) for line in lines if (m := re.search(r"at (http://\S+)", line))), None),
            timeout=60, what="tidal run to print the app's URL",
        )  # fmt: skip
        assert url.endswith("/local/run-server")
        resp = httpx.get(f"{url}/", timeout=60)
        assert resp.json() == {"hello": "world"}
        # The runner's log lines stream to the terminal.
        wait_for(lambda: any("Application startup complete" in line for line in lines), timeout=10)
        platform_url = url.rsplit("/local/", 1)[0]
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    reader.join(5)
    assert proc.stdout is not None
    proc.stdout.close()
    assert code == 0, "".join(lines)
    assert any("Removed run-server" in line for line in lines)
    with pytest.raises(httpx.ConnectError):  # the embedded platform is gone too
        httpx.get(f"{platform_url}/api/v1/health", timeout=2)
