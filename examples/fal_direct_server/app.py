"""fal's direct server mode, written for fal and deployed on tidal unchanged.

Deploy it with `tidal deploy app.py::run_server`."""

import subprocess
import sys

import fal


@fal.function(
    machine_type="S",
    exposed_port=8000,
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
