"""A server with the features a proxy must not break."""

import asyncio
import hashlib
import os

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

app = FastAPI()
BLOCK = bytes(range(256)) * 4096  # 1 MiB, deterministic


@app.middleware("http")
async def stamp(request: Request, call_next):  # type: ignore[no-untyped-def]
    response = await call_next(request)
    response.headers["x-middleware"] = "stamped"
    return response


@app.api_route("/echo/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
async def echo(rest: str, request: Request) -> dict[str, object]:
    body = await request.body()
    return {
        "method": request.method,
        "path": request.url.path,
        "raw_query": request.url.query,
        "headers": dict(request.headers),
        "cookies": request.cookies,
        "body": body.decode("latin-1"),
    }


@app.api_route("/whoami", methods=["GET", "POST"])
async def whoami(sleep: float = 0.0, gate: str = "") -> dict[str, object]:
    """Answers after `sleep`, or once the file `gate` exists in /data."""
    while gate and not os.path.exists(os.path.join(os.environ["TIDAL_DATA_DIR"], gate)):
        await asyncio.sleep(0.05)
    await asyncio.sleep(sleep)
    return {"runner": os.environ.get("TIDAL_RUNNER_ID"), "pid": os.getpid()}


IN_FLIGHT = {"now": 0, "max": 0}


@app.get("/inflight")
async def inflight(sleep: float = 1.0) -> dict[str, object]:
    """How many requests this server held at once: multiplexing seen from inside."""
    IN_FLIGHT["now"] += 1
    IN_FLIGHT["max"] = max(IN_FLIGHT["max"], IN_FLIGHT["now"])
    await asyncio.sleep(sleep)
    IN_FLIGHT["now"] -= 1
    return {
        "max": IN_FLIGHT["max"],
        "runner": os.environ.get("TIDAL_RUNNER_ID"),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "machine_type": os.environ.get("TIDAL_MACHINE_TYPE"),
    }


@app.post("/work")
async def work(request: Request, sleep: float = 0.0, gate: str = "") -> dict[str, object]:
    """A queued job: records that it ran (in /data, shared by all runners) and echoes,
    after `sleep`, or once the file `gate` exists in /data."""
    request_id = request.headers.get("x-tidal-request-id", "")
    data = os.environ.get("TIDAL_DATA_DIR")
    if data:
        with open(os.path.join(data, "work-runs.txt"), "a") as runs:
            runs.write(request_id + "\n")
    while data and gate and not os.path.exists(os.path.join(data, gate)):
        await asyncio.sleep(0.05)
    await asyncio.sleep(sleep)
    return {"request_id": request_id, "body": (await request.body()).decode()}


@app.get("/env")
async def env() -> dict[str, object]:
    keys = ("CUDA_VISIBLE_DEVICES", "TIDAL_MACHINE_TYPE", "TIDAL_RUNNER_ID", "TIDAL_REVISION")
    return {k: os.environ.get(k) for k in keys}


@app.get("/cookies")
async def set_cookies() -> Response:
    response = JSONResponse({"ok": True})
    response.set_cookie("session", "abc123", httponly=True)
    response.set_cookie("theme", "dark")
    return response


@app.get("/redirect")
async def redirect() -> Response:
    return RedirectResponse("/target?x=1", status_code=302)


@app.api_route("/status/{code}", methods=["GET", "POST"])
async def status(code: int) -> Response:
    return JSONResponse({"status": code}, status_code=code)


@app.get("/stream")
async def stream(events: int = 5, gap: float = 0.3) -> StreamingResponse:
    async def gen():  # type: ignore[no-untyped-def]
        for i in range(events):
            yield f"data: event {i}\n\n".encode()
            await asyncio.sleep(gap)

    return StreamingResponse(gen(), media_type="text/event-stream")


@app.post("/upload")
async def upload(request: Request) -> dict[str, object]:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return {"sha256": digest.hexdigest(), "size": size}


@app.get("/download")
async def download(mib: int = 50) -> StreamingResponse:
    async def gen():  # type: ignore[no-untyped-def]
        for _ in range(mib):
            yield BLOCK

    return StreamingResponse(
        gen(),
        media_type="application/octet-stream",
        headers={"content-length": str(mib * len(BLOCK))},
    )


@app.api_route("/crash", methods=["GET", "POST"])
async def crash() -> None:
    os._exit(3)
