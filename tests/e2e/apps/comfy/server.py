"""A ComfyUI-shaped server: a WebSocket progress channel per client (`/ws?clientId=`) and
`POST /prompt` (`{"prompt": ..., "client_id": ...}`) queued to one worker, whose progress
goes only to its client's WebSocket on this server (as ComfyUI does). Every message names
the runner, so a test can tell which runner served what."""

import asyncio
import os
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

RUNNER = os.environ.get("TIDAL_RUNNER_ID", "direct")
sockets: dict[str, WebSocket] = {}
queue: asyncio.Queue[tuple[str, str, int]] = asyncio.Queue()
history: dict[str, dict[str, Any]] = {}
worker: asyncio.Task[None] | None = None


async def send_to(client_id: str, message: dict[str, Any]) -> None:
    ws = sockets.get(client_id)
    if ws is not None:
        try:
            await ws.send_json({**message, "runner": RUNNER})
        except Exception:
            sockets.pop(client_id, None)


async def work() -> None:
    while True:
        prompt_id, client_id, steps = await queue.get()
        await send_to(client_id, {"type": "execution_start", "data": {"prompt_id": prompt_id}})
        for step in range(1, steps + 1):
            await asyncio.sleep(0.05)
            await send_to(
                client_id,
                {"type": "progress", "data": {"prompt_id": prompt_id, "value": step, "max": steps}},
            )
        history[prompt_id] = {"client_id": client_id, "runner": RUNNER}
        await send_to(
            client_id, {"type": "executing", "data": {"node": None, "prompt_id": prompt_id}}
        )


async def ws_endpoint(ws: WebSocket) -> None:
    global worker
    if worker is None:
        worker = asyncio.create_task(work())
    client_id = ws.query_params.get("clientId") or uuid.uuid4().hex
    await ws.accept()
    sockets[client_id] = ws
    await ws.send_json({"type": "status", "data": {"sid": client_id}, "runner": RUNNER})
    try:
        while True:
            await ws.receive_text()
    except WebSocketDisconnect:
        if sockets.get(client_id) is ws:
            del sockets[client_id]


async def prompt(request: Request) -> JSONResponse:
    global worker
    if worker is None:
        worker = asyncio.create_task(work())
    body = await request.json()
    prompt_id = uuid.uuid4().hex
    await queue.put((prompt_id, str(body.get("client_id", "")), int(body.get("steps", 3))))
    return JSONResponse({"prompt_id": prompt_id, "number": queue.qsize(), "runner": RUNNER})


async def get_history(request: Request) -> JSONResponse:
    entry = history.get(request.path_params["prompt_id"])
    return JSONResponse({request.path_params["prompt_id"]: entry} if entry else {})


async def events(request: Request) -> StreamingResponse:
    """An event stream that stays open while the client listens (a progress feed)."""

    async def feed():  # type: ignore[no-untyped-def]
        for i in range(600):
            yield f"data: {i}\n\n"
            await asyncio.sleep(0.1)

    return StreamingResponse(feed(), media_type="text/event-stream")


async def index(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"comfy-shaped {RUNNER}")


async def raw(ws: WebSocket) -> None:
    """Says the path exactly as it arrived (percent-encoding kept)."""
    await ws.accept()
    await ws.send_json({"raw_path": ws.scope["raw_path"].decode("latin-1")})
    await ws.close()


app = Starlette(
    routes=[
        Route("/", index),
        Route("/prompt", prompt, methods=["POST"]),
        Route("/events", events),
        Route("/history/{prompt_id}", get_history),
        WebSocketRoute("/ws", ws_endpoint),
        WebSocketRoute("/raw/{rest:path}", raw),
    ]
)
