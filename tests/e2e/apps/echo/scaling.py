"""Apps for the scaling and placement tests; all serve server.py."""

import os
import subprocess
import sys
import time
from pathlib import Path

import tidal

SERVE = [sys.executable, "-m", "uvicorn", "server:app", "--host", "127.0.0.1", "--port", "8000"]


def serve() -> None:
    subprocess.run(SERVE, check=True)


@tidal.function(exposed_port=8000, max_multiplexing=2, max_concurrency=3, keep_alive=30)
def burst() -> None:
    serve()


@tidal.function(exposed_port=8000, min_concurrency=2, keep_alive=30)
def warm() -> None:
    serve()


@tidal.function(exposed_port=8000, max_multiplexing=3, max_concurrency=1, keep_alive=30)
def multiplexed() -> None:
    serve()


@tidal.function(exposed_port=8000, machine_type="GPU-FAKE", max_concurrency=2, keep_alive=30)
def gpu() -> None:
    serve()


@tidal.function(exposed_port=8000, machine_type="BIG", min_concurrency=1, keep_alive=30)
def big() -> None:
    serve()


@tidal.function(exposed_port=8000, machine_type=["BIG", "S"], keep_alive=30)
def fallback() -> None:
    serve()


@tidal.function(exposed_port=8000, startup_timeout=2, keep_alive=30)
def flaky_start() -> None:
    # The first runner never listens; the ones after it do (/data is shared by all
    # runners on the platform; their code folder is read-only).
    marker = Path(os.environ["TIDAL_DATA_DIR"], ".flaky-started")
    if not marker.exists():
        marker.touch()
        time.sleep(3600)
    serve()


@tidal.function(exposed_port=8000, concurrency_buffer=1, max_concurrency=3, keep_alive=30)
def buffered() -> None:
    serve()


@tidal.function(exposed_port=8000, scaling_delay=2, max_concurrency=2, keep_alive=30)
def delayed() -> None:
    serve()


@tidal.function(exposed_port=8000, max_concurrency=1, keep_alive=60)
def single() -> None:
    serve()
