"""The seed pattern, verbatim apart from the interpreter path."""

import subprocess
import sys

import tidal


@tidal.function(
    machine_type="S",
    exposed_port=8000,  # the port the user's server listens on
    keep_alive=300,
    max_concurrency=5,
    request_timeout=600,
    startup_timeout=300,
)
def run_server() -> None:
    subprocess.run(
        [sys.executable, "-m", "uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000"],
        check=True,
    )
