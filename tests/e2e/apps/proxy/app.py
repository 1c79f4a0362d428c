"""Proxy app mode: an App wrapping an internal server, with typed endpoints."""

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator

from fastapi import Request, WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

import tidal


class GenerateRequest(BaseModel):
    prompt: str = Field(min_length=1)
    steps: int = Field(default=4, ge=1, le=50)


class GenerateResponse(BaseModel):
    text: str
    steps: int
    runner: str


class Proxy(tidal.App, keep_alive=30, max_concurrency=2):
    machine_type = "XS"

    def setup(self) -> None:
        # The internal server this App wraps, on a port of its own.
        self.port = 8100 + int(os.environ["TIDAL_RUNNER_ID"][-2:], 16) % 800
        self.process = subprocess.Popen(
            [sys.executable, "internal_server.py", str(self.port)], cwd=os.path.dirname(__file__)
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.teardown_marker = os.environ.get("TIDAL_TEARDOWN_MARKER")

    def teardown(self) -> None:
        print("teardown: stopping the internal server", flush=True)
        self.process.terminate()
        self.process.wait(10)

    @tidal.endpoint("/generate")
    def generate(self, input: GenerateRequest, request: Request) -> GenerateResponse:
        print(f"generating {input.prompt!r} in {input.steps} steps", flush=True)
        logging.getLogger("proxy").warning("steps=%d", input.steps)
        body = json.dumps({"prompt": input.prompt, "steps": input.steps}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/generate", data=body)
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = json.loads(resp.read())["text"]
        return GenerateResponse(text=text, steps=input.steps, runner=os.environ["TIDAL_RUNNER_ID"])

    @tidal.endpoint("/async-upper")
    async def upper(self, input: GenerateRequest) -> GenerateResponse:
        await asyncio.sleep(0)
        return GenerateResponse(
            text=input.prompt.upper(), steps=input.steps, runner=os.environ["TIDAL_RUNNER_ID"]
        )

    @tidal.endpoint("/slow")
    async def slow(self, input: GenerateRequest) -> GenerateResponse:
        try:
            await asyncio.sleep(input.steps)
        except asyncio.CancelledError:
            print(f"handler saw the cancellation of {input.prompt!r}", flush=True)
            raise
        return GenerateResponse(
            text="done", steps=input.steps, runner=os.environ["TIDAL_RUNNER_ID"]
        )

    @tidal.endpoint("/info", method="GET")
    def info(self) -> dict[str, str]:
        return {"app": "proxy"}

    @tidal.endpoint("/fail")
    def fail(self, input: GenerateRequest) -> GenerateResponse:
        raise ValueError(f"cannot generate {input.prompt!r}")

    @tidal.endpoint("/stream")
    async def stream(self, input: GenerateRequest) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            for i in range(input.steps):
                yield f"data: {json.dumps({'step': i})}\n\n".encode()
                await asyncio.sleep(0.3)

        return StreamingResponse(events(), media_type="text/event-stream")

    @tidal.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive_text()
            await websocket.send_text(f"echo: {message}")
