"""Serving a plain function (`@tidal.function` / `@fal.function` without
`exposed_port`): each POST is one call, in `tidal.sdk.wire`'s format.

The body's arguments are unpickled and the function runs (a sync one in a
thread); what it prints goes to the runner's log and, per request, to the
queue's status logs, which is how the caller sees its stdout as it happens.
The answer is the pickled value, or the pickled exception with its traceback
(status 500).
"""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import Callable
from types import CodeType, TracebackType
from typing import Any

from tidal.asgi import ClientGone, read_body
from tidal.runtime import request_logs
from tidal.runtime.request_logs import RequestContext
from tidal.sdk.function import Function
from tidal.sdk.wire import (
    CONTENT_TYPE,
    MAX_CALL_BYTES,
    WireError,
    decode_call,
    encode_exception,
    encode_result,
)

Scope = dict[str, Any]


class FunctionServer:
    """A raw ASGI app: POST (any path) calls the function; GET answers health probes."""

    def __init__(self, fn: Function[..., Any]) -> None:
        self.fn = fn
        self.module = fn.func.__module__

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":  # readiness and health probes; no OpenAPI document
            found = scope["path"] != "/openapi.json"
            await _answer(send, 200 if found else 404, b'{"status": "ok"}' if found else b"{}")
            return
        try:
            body = await read_body(receive, MAX_CALL_BYTES)
        except ClientGone:
            return  # the caller hung up before its call was whole: nothing to run
        except OverflowError:
            error = WireError(f"the call is over the {MAX_CALL_BYTES}-byte limit")
            await _answer(send, 413, encode_exception(error))
            return
        try:
            args, kwargs = decode_call(body)
        except Exception as exc:  # a bad call is the caller's problem, said to the caller
            await _answer(send, 400, encode_exception(exc))
            return
        try:
            value = await self._run(args, kwargs)
        except Exception as exc:
            exc.__traceback__ = _from_user_code(exc.__traceback__, self.fn.func.__code__)
            request_logs.current_request.set(None)  # the caller gets it raised, not printed
            print(f"tidal: {self.fn.func.__name__} failed:\n"
                  + "".join(traceback.format_exception(exc)), flush=True)  # fmt: skip
            await _answer(send, 500, encode_exception(exc, self.module))
            return
        try:
            answer = encode_result(value, self.module)
        except Exception as exc:
            await _answer(send, 500, encode_exception(TypeError(
                f"{self.fn.func.__name__} returned a {type(value).__name__}, which cannot be "
                f"pickled: {exc}"
            )))  # fmt: skip
            return
        await _answer(send, 200, answer)

    async def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        func = self.fn.func
        if inspect.iscoroutinefunction(func):
            return await func(*args, **kwargs)
        return await asyncio.to_thread(func, *args, **kwargs)  # context (request id) goes along


def _from_user_code(tb: TracebackType | None, code: CodeType) -> TracebackType | None:
    """The traceback from the function's own frame on (tidal's frames left out)."""
    found = tb
    while found is not None and found.tb_frame.f_code is not code:
        found = found.tb_next
    return found or tb


async def _answer(send: Any, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if status >= 400:
        headers.append((b"x-fal-error-type", b"remote_exception"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve_function(
    fn: Function[..., Any],
    port: int,
    host: str = "127.0.0.1",
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve calls of `fn` on host:port until SIGTERM; `on_listening` is called once
    the port takes connections."""
    import uvicorn

    from tidal.runtime.listening import ListeningServer

    request_logs.install()
    config = uvicorn.Config(
        RequestContext(FunctionServer(fn)), host=host, port=port, log_level="warning",
        access_log=False, timeout_graceful_shutdown=30,
    )  # fmt: skip
    ListeningServer(config, on_listening).run()
