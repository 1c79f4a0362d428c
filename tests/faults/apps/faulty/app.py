import subprocess
import sys
import time

import tidal

SERVER = [sys.executable, "-m", "uvicorn", "server:app", "--host", "127.0.0.1", "--port", "8000"]


@tidal.function(exposed_port=8000, keep_alive=300, max_concurrency=2)
def faulty() -> None:
    subprocess.run(SERVER, check=True)


@tidal.function(exposed_port=8000, keep_alive=300, max_concurrency=1, max_multiplexing=1)
def single() -> None:
    subprocess.run(SERVER, check=True)


@tidal.function(exposed_port=8000, keep_alive=300, max_concurrency=1, request_timeout=2)
def hurried() -> None:
    subprocess.run(SERVER, check=True)


@tidal.function(exposed_port=8000, request_timeout=2, startup_timeout=300)
def never_ready() -> None:
    time.sleep(600)  # starting up, never listening: requests wait for it


@tidal.function(exposed_port=8000, keep_alive=300, min_concurrency=3, max_concurrency=3,
                request_timeout=20)  # fmt: skip
def killable() -> None:
    subprocess.run(SERVER, check=True)
