"""WebSocket endpoints through the gateway: the caller's connection is accepted
once the runner's is open, then messages are relayed both ways until either
side closes. While open, a WebSocket holds one of the runner's request slots or,
with the app's long_lived="separate", one of its long-lived places
(tidal.domain.router). The path goes to the runner as the caller sent it (raw,
still percent-encoded), as for HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tidal.domain.router import RouterError
from tidal.gateway.affinity import affinity_key
from tidal.gateway.upstream import open_socket
from tidal.scaling.controller import Controller, Deployment

# Headers the WebSocket client library sets itself.
_OWN_HEADERS = frozenset({
    b"host", b"upgrade", b"connection", b"sec-websocket-key", b"sec-websocket-version",
    b"sec-websocket-extensions", b"sec-websocket-protocol",
})  # fmt: skip


async def proxy_websocket(
    scope: dict[str, Any], receive: Any, send: Any, dep: Deployment, controller: Controller
) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    prefix = f"/{dep.record.owner}/{dep.record.name}"
    key, set_cookie = affinity_key(scope, dep.record.options.affinity, prefix)
    try:
        runner, holds_slot = await dep.router.open_long_lived(key)
    except RouterError:
        await send({"type": "websocket.close", "code": 1013})  # try again later
        return
    try:
        assert runner.address is not None
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path = raw_path[len(prefix) :].decode("latin-1") or "/"
        query = scope["query_string"].decode("latin-1")
        uri = f"ws://{runner.address.host}:{runner.address.port}{path}" + (
            f"?{query}" if query else ""
        )
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k not in _OWN_HEADERS
        ]
        headers.append(("x-forwarded-prefix", prefix))
        try:
            sock = await open_socket(runner.address)
            upstream = await connect(
                uri, sock=sock, additional_headers=headers, subprotocols=scope.get("subprotocols") or None,
                user_agent_header=None, compression=None, proxy=None, max_size=None,
            )  # fmt: skip
        except InvalidStatus as exc:
            await send(
                {
                    "type": "websocket.close",
                    "code": 1008 if exc.response.status_code < 500 else 1011,
                }
            )
            return
        except (OSError, InvalidHandshake, TimeoutError):
            controller.suspect(dep, runner)
            await send({"type": "websocket.close", "code": 1011})
            return
        async with upstream:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol,
                        "headers": [(b"set-cookie", set_cookie)] if set_cookie else []})  # fmt: skip
            await _relay(receive, send, upstream)
    finally:
        if holds_slot:
            dep.router.release(runner)
        else:
            dep.router.close_long_lived(runner)


async def _relay(receive: Any, send: Any, upstream: ClientConnection) -> None:
    async def client_to_runner() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(message.get("code", 1000))
                return
            if message.get("text") is not None:
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send(message["bytes"])

    async def runner_to_client() -> None:
        try:
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        code = upstream.close_code or 1000
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": code})

    tasks = [asyncio.ensure_future(client_to_runner()), asyncio.ensure_future(runner_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
