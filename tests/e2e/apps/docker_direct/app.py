"""The seed's direct server, in a container: an HTTP server in the image on port 8000.

A multi-stage Dockerfile with a build argument, on the test base image (debootstrap)."""

import subprocess
import sys

import tidal
from tidal import ContainerImage

DOCKERFILE = """
ARG BASE=tidal-test/debian-python:bookworm
FROM ${BASE} AS build
ARG GREETING=hello
RUN echo "$GREETING from the build stage" > /greeting
FROM ${BASE}
COPY --from=build /greeting /greeting
"""


@tidal.function(
    image=ContainerImage.from_dockerfile_str(DOCKERFILE, build_args={"GREETING": "bonjour"}),
    machine_type="S",
    exposed_port=8000,
    keep_alive=300,
    max_concurrency=5,
)
def run_server() -> None:
    subprocess.run(
        [sys.executable, "-m", "uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000"],
        check=True,
    )
