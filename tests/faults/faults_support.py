"""What the fault tier's tests share: deploying its app, reading the platform's
metrics, and raw sockets for callers that misbehave."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import httpx

from tidal.testing import PlatformProcess

APPS = Path(__file__).parent / "apps"


def deploy(platform: PlatformProcess, function: str, *extra: str) -> None:
    platform.cli("deploy", f"app.py::{function}", "--json", *extra, cwd=APPS / "faulty")


def shared(platform: PlatformProcess) -> Path:
    """The folder the runners see as /data."""
    return platform.data_dir / "data"


def runs(platform: PlatformProcess) -> list[str]:
    """The marks of the requests the app's runners started, in order."""
    path = shared(platform) / "runs.txt"
    return path.read_text().split() if path.exists() else []


def gauge(platform: PlatformProcess, name: str, app: str) -> float:
    with platform.http() as http:
        text = http.get("/metrics").text
    pattern = rf'^{name}\{{[^}}]*app="{re.escape(app)}"[^}}]*\}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def raw_socket(platform: PlatformProcess, timeout: float = 30) -> socket.socket:
    port = int(platform.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def request_head(method: str, path: str, headers: dict[str, Any]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(platform: PlatformProcess, path: str, mark: str, **params: Any) -> httpx.Response:
    with platform.http() as http:
        return http.post(path, params=params, headers={"x-test-mark": mark})
