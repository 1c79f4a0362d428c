"""fal's proxy app pattern, written for fal and deployed on tidal unchanged.

The App starts an existing server (`image_server.py`) in `setup()`, waits for it,
and exposes a typed `/generate` endpoint that calls it and returns the image by
URL with `fal.toolkit.Image`. Deploy it with `tidal deploy app.py::MyServerProxy`.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import fal
from fal.toolkit import Image
from fastapi import Request
from pydantic import BaseModel, Field

HERE = os.path.dirname(os.path.abspath(__file__))


class GenerateRequest(BaseModel):
    prompt: str = Field(min_length=1, description="What to draw.", examples=["a red square"])


class GenerateResponse(BaseModel):
    image: Image = Field(description="The generated image.")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MyServerProxy(fal.App, keep_alive=300, max_concurrency=1):
    machine_type = "S"

    def setup(self) -> None:
        self.port = _free_port()
        self.output_dir = tempfile.mkdtemp(prefix="image-server-")
        self.server_process = subprocess.Popen(
            [sys.executable, "image_server.py", "--port", str(self.port),
             "--output-dir", self.output_dir],
            cwd=HERE,
        )  # fmt: skip
        self._wait_for_server()

    def _wait_for_server(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server_process.poll() is not None:
                raise RuntimeError(f"image_server.py exited ({self.server_process.returncode})")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        raise RuntimeError(f"image_server.py did not answer within {timeout:.0f} s")

    @fal.endpoint("/generate")
    def generate(self, input: GenerateRequest, request: Request) -> GenerateResponse:
        call = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/generate",
            data=json.dumps({"prompt": input.prompt}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(call, timeout=120) as response:
            path = json.loads(response.read())["path"]
        return GenerateResponse(image=Image.from_path(path, request=request))

    def teardown(self) -> None:
        self.server_process.terminate()
        self.server_process.wait(10)
