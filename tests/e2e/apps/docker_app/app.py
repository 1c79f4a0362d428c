"""An App in a container: secrets, /data shared between containers, teardown on stop."""

import hashlib
import os
import socket
import sys

from pydantic import BaseModel

import tidal
from tidal import ContainerImage

DOCKERFILE = "FROM tidal-test/debian-python:bookworm\nRUN echo built > /built\n"


class Note(BaseModel):
    name: str
    text: str = ""


class Stateful(tidal.App, keep_alive=300, image=ContainerImage.from_dockerfile_str(DOCKERFILE)):
    machine_type = "XS"
    secrets = ["DOCKER_TEST_SECRET"]

    def setup(self) -> None:
        self.runner = os.environ.get("TIDAL_RUNNER_ID", "")
        print(f"setup of {self.runner} done", flush=True)

    @tidal.endpoint("/info")
    def info(self) -> dict[str, object]:
        secret = os.environ.get("DOCKER_TEST_SECRET", "")
        return {
            "runner": self.runner,
            "hostname": socket.gethostname(),
            "in_container": any(map(os.path.exists, ("/.dockerenv", "/run/.containerenv"))),
            "python": sys.executable,
            "secret_sha256": hashlib.sha256(secret.encode()).hexdigest() if secret else None,
            "built": open("/built").read().strip(),
        }

    @tidal.endpoint("/write")
    def write(self, note: Note) -> dict[str, str]:
        with open(f"/data/{note.name}", "w") as f:
            f.write(note.text)
        return {"runner": self.runner}

    @tidal.endpoint("/read")
    def read(self, note: Note) -> dict[str, str]:
        with open(f"/data/{note.name}") as f:
            return {"text": f.read(), "runner": self.runner}

    def teardown(self) -> None:
        with open(f"/data/teardown-{self.runner}", "w") as f:
            f.write("done")
