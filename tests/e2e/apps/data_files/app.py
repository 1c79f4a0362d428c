import subprocess
import sys

import tidal


@tidal.function(exposed_port=8000, keep_alive=300)
def data_files() -> None:
    subprocess.run(
        [sys.executable, "-m", "uvicorn", "server:app", "--host", "127.0.0.1", "--port", "8000"],
        check=True,
    )
