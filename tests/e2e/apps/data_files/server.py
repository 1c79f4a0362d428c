"""Reads and writes /data from inside a runner, for `tidal files` tests."""

import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

app = FastAPI()
DATA = Path(os.environ.get("TIDAL_DATA_DIR", "/data"))


@app.get("/read")
async def read(path: str) -> PlainTextResponse:
    return PlainTextResponse((DATA / path).read_text())


@app.post("/write")
async def write(path: str, request: Request) -> dict[str, int]:
    target = DATA / path
    target.parent.mkdir(parents=True, exist_ok=True)
    body = await request.body()
    target.write_bytes(body)
    return {"size": len(body)}


@app.post("/link")
async def link(path: str, to: str) -> dict[str, str]:
    (DATA / path).symlink_to(to)
    return {"linked": to}
