"""from_dockerfile(path): the Dockerfile's folder is the build context."""

import subprocess
import sys

import tidal
from tidal import ContainerImage


@tidal.function(image=ContainerImage.from_dockerfile("Dockerfile"), exposed_port=8000)
def ctx_server() -> None:
    subprocess.run([sys.executable, "-m", "http.server", "8000", "--directory", "/srv"], check=True)
