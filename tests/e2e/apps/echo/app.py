import subprocess
import sys

import tidal


@tidal.function(exposed_port=8000, keep_alive=300, max_concurrency=2)
def echo() -> None:
    subprocess.run(
        [sys.executable, "-m", "uvicorn", "server:app", "--host", "0.0.0.0", "--port", "8000"],
        check=True,
    )


@tidal.function(exposed_port=8000, keep_alive=2, max_concurrency=2)
def short_lived() -> None:
    subprocess.run(
        [sys.executable, "-m", "uvicorn", "server:app", "--host", "127.0.0.1", "--port", "8000"],
        check=True,
    )


@tidal.function(exposed_port=8000, keep_alive=300, request_timeout=1)
def impatient() -> None:
    subprocess.run(
        [sys.executable, "-m", "uvicorn", "server:app", "--host", "127.0.0.1", "--port", "8000"],
        check=True,
    )
