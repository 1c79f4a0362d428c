"""fal's realtime endpoint modes on a runner's ASGI app (tidal.sdk.realtime), served by
uvicorn on 127.0.0.1 and spoken to over real websockets; the fal-client test covers
the gateway path (tests/e2e/test_fal_client.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator

import msgpack
import pytest
import uvicorn
from pydantic import BaseModel
from websockets.sync.client import connect

import tidal
from tidal.runtime.app_server import build_asgi
from tidal.sdk.realtime import realtime
from tidal.testing import wait_for


class In(BaseModel):
    n: int


class Modes(tidal.App):
    @realtime("/sum", session_timeout=0.3)
    async def total(self, inputs: AsyncIterator[In]) -> dict[str, int]:
        return {"total": sum([i.n async for i in inputs])}

    @realtime("/echo")
    async def echo(self, inputs: AsyncIterator[In]) -> AsyncIterator[dict[str, int]]:
        async for item in inputs:
            yield {"twice": item.n * 2}

    @realtime("/quiet", session_timeout=0.2)
    def quiet(self, item: In) -> dict[str, int]:
        return {"n": item.n}

    @realtime("/json", encode_message=lambda m: json.dumps(m).encode(),
              decode_message=json.loads)  # fmt: skip
    def as_json(self, item: In) -> In:
        return In(n=item.n + 1)


def pack(value: object) -> bytes:
    data: bytes = msgpack.packb(value)
    return data


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(build_asgi(Modes), host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="on"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the runner's server to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"ws://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_streaming_modes_timeout_and_custom_encoding(served: str) -> None:
    with connect(f"{served}/sum") as ws:
        for n in (1, 2, 3):
            ws.send(pack({"n": n}))
        # The inputs end after session_timeout without one; then the one output comes.
        assert msgpack.unpackb(ws.recv()) == {"total": 6}
    with connect(f"{served}/echo") as ws:
        for n in (1, 5):
            ws.send(pack({"n": n}))
            assert msgpack.unpackb(ws.recv()) == {"twice": n * 2}
    with connect(f"{served}/quiet") as ws:
        ws.send(pack({"n": 4}))
        assert msgpack.unpackb(ws.recv()) == {"n": 4}
        timeout = json.loads(ws.recv())  # no input within session_timeout
        assert (timeout["type"], timeout["error"]) == ("x-fal-error", "TIMEOUT")
    with connect(f"{served}/json") as ws:
        ws.send(b'{"n": 1}')
        assert json.loads(ws.recv()) == {"n": 2}
