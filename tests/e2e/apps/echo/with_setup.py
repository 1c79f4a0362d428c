import os
import subprocess
import sys
from pathlib import Path


def prepare() -> None:
    # What a setup_function is for: fetch weights to /data once, before serving.
    Path(os.environ["TIDAL_DATA_DIR"], "prepared-by-setup").write_text(
        os.environ["TIDAL_RUNNER_ID"]
    )


import tidal  # noqa: E402


@tidal.function(exposed_port=8000, setup_function=prepare, keep_alive=30)
def prepared() -> None:
    subprocess.run(
        [sys.executable, "-m", "uvicorn", "server:app", "--host", "127.0.0.1", "--port", "8000"],
        check=True,
    )
