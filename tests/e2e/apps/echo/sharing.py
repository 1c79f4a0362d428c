"""Apps for the capacity-sharing test: two 1-CPU apps and one 2-CPU app on a 2-CPU host."""

import subprocess
import sys

import tidal

SERVE = [sys.executable, "-m", "uvicorn", "server:app", "--host", "127.0.0.1", "--port", "8000"]


@tidal.function(exposed_port=8000, machine_type="S", keep_alive=60)
def small() -> None:
    subprocess.run(SERVE, check=True)


@tidal.function(exposed_port=8000, machine_type="M", keep_alive=60)
def large() -> None:
    subprocess.run(SERVE, check=True)
