"""A server for the fault tier: slow readers, gated work, and a record of what ran."""

import asyncio
import hashlib
import os
import time
from pathlib import Path

from fastapi import FastAPI, Request

app = FastAPI()


def data() -> Path:
    return Path(os.environ["TIDAL_DATA_DIR"])


@app.post("/slow-upload")
async def slow_upload(request: Request, mib_per_s: float = 8.0) -> dict[str, object]:
    """Reads the body no faster than `mib_per_s`, as a runner busy with each chunk does."""
    digest = hashlib.sha256()
    size = 0
    started = time.monotonic()
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
        await asyncio.sleep(max(0.0, started + size / (mib_per_s * 2**20) - time.monotonic()))
    return {"sha256": digest.hexdigest(), "size": size}


@app.post("/run")
async def run(request: Request, sleep: float = 0.0, gate: str = "") -> dict[str, object]:
    """Writes the caller's mark to /data/runs.txt when it starts; then waits for the
    gate file (when named) or sleeps."""
    mark = request.headers.get("x-test-mark", "")
    with (data() / "runs.txt").open("a") as runs:
        runs.write(mark + "\n")
    if gate:
        while not (data() / gate).exists():
            await asyncio.sleep(0.05)
    await asyncio.sleep(sleep)
    return {"mark": mark, "body": (await request.body()).decode(), "pid": os.getpid()}
