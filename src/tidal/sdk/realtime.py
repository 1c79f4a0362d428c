"""`realtime(path)`: an App method served as a realtime websocket endpoint, as fal's
`@fal.realtime` defines one and fal's realtime client speaks to it.

Each message is msgpack (unless `encode_message`/`decode_message` say otherwise);
the method's input and output types say the session's shape:

- unary, `def f(self, input: In) -> Out`: every message is one call, answered by
  one message. While a call runs, at most `buffering` inputs wait (older ones
  are dropped: a realtime client wants the newest frame), and up to
  `max_batch_size` waiting inputs are given to one call;
- server streaming, `-> Iterator[Out]`/`AsyncIterator[Out]`: one input, a
  message per item;
- client streaming, `input: AsyncIterator[In]` (async): many inputs, one output;
- bidirectional, `AsyncIterator[In] -> AsyncIterator[Out]`.

An output is a dict or a pydantic model. A failure is sent as fal's JSON error
message `{"type": "x-fal-error", "error": "INTERNAL_ERROR", "reason": ...}`, and
`session_timeout` seconds without input end the session with error "TIMEOUT".
"""

from __future__ import annotations

import asyncio
import collections.abc
import inspect
import json
import typing
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from tidal.sdk.app import EndpointSpec

F = typing.TypeVar("F", bound=Callable[..., Any])
_UNSET: Any = object()
_ASYNC_ITERATORS = (collections.abc.AsyncIterator, collections.abc.AsyncGenerator)
_SYNC_ITERATORS = (collections.abc.Iterator, collections.abc.Iterable, collections.abc.Generator)


def msgpack_encode_message(message: Any) -> bytes:
    import msgpack  # type: ignore[import-untyped]

    data: bytes = msgpack.packb(message, use_bin_type=True)
    return data


def msgpack_decode_message(message: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(message, raw=False)


def _item_type(annotation: Any, kinds: tuple[type, ...]) -> Any:
    """`X` of `AsyncIterator[X]` (or Any when bare); None when not such a type."""
    origin = typing.get_origin(annotation) or annotation
    if origin in kinds:
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return None


def realtime(
    path: str,
    *,
    buffering: int | None = None,
    session_timeout: float | None = None,
    input_modal: Any = _UNSET,
    output_modal: Any = _UNSET,
    max_batch_size: int = 1,
    content_type: str = "application/msgpack",
    encode_message: Callable[[Any], bytes] | None = None,
    decode_message: Callable[[bytes], Any] | None = None,
) -> Callable[[F], F]:
    """Serve the decorated App method as a realtime endpoint at `path` (a websocket)."""
    if not path.startswith("/"):
        raise ValueError(f"realtime path {path!r} must start with '/'")
    if max_batch_size < 1 or (buffering is not None and buffering < 1):
        raise ValueError("realtime: max_batch_size and buffering must be at least 1")

    def mark(func: F) -> F:
        hints = typing.get_type_hints(func)
        params = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
        given = hints.get(params[0].name) if params else None
        returned = hints.get("return")
        in_stream = _item_type(given, _ASYNC_ITERATORS)
        out_stream = _item_type(returned, _ASYNC_ITERATORS)
        if out_stream is None:
            out_stream = _item_type(returned, _SYNC_ITERATORS)
        mode = (
            "bidi" if in_stream is not None and out_stream is not None
            else "client_streaming" if in_stream is not None
            else "server_streaming" if out_stream is not None
            else "unary"
        )  # fmt: skip
        model = input_modal if input_modal is not _UNSET else (in_stream or given)
        session = _Session(
            func, mode, None if model is Any else model, buffering, session_timeout,
            max_batch_size, encode_message or msgpack_encode_message,
            decode_message or msgpack_decode_message,
        )  # fmt: skip

        async def websocket_endpoint(self: Any, websocket: WebSocket) -> None:
            await session.run(self, websocket)

        websocket_endpoint.__name__ = func.__name__
        websocket_endpoint.__qualname__ = func.__qualname__
        websocket_endpoint.__annotations__ = {"websocket": WebSocket, "return": None}
        websocket_endpoint._tidal_endpoint = EndpointSpec(path, "GET", is_websocket=True)  # type: ignore[attr-defined]
        websocket_endpoint.original_func = func  # type: ignore[attr-defined]
        return typing.cast(F, websocket_endpoint)

    return mark


class _Session:
    def __init__(
        self,
        func: Callable[..., Any],
        mode: str,
        model: Any,
        buffering: int | None,
        timeout: float | None,
        max_batch_size: int,
        encode: Callable[[Any], bytes],
        decode: Callable[[bytes], Any],
    ) -> None:
        self.func, self.mode, self.model = func, mode, model
        self.buffering, self.timeout, self.max_batch_size = buffering or 1, timeout, max_batch_size
        self.encode, self.decode = encode, decode

    async def run(self, app: Any, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            timed_out = await getattr(self, f"_{self.mode}")(app, websocket)
            if timed_out:
                await _error(websocket, "TIMEOUT", "no inputs, reconnect when needed!")
        except WebSocketDisconnect:
            return
        except Exception as exc:
            import traceback

            traceback.print_exc()
            await _error(websocket, "INTERNAL_ERROR", str(exc))
        with suppress(WebSocketDisconnect, RuntimeError):
            await websocket.close()

    async def _receive(self, websocket: WebSocket) -> Any:
        """The next input, or None when the caller is gone; TimeoutError after the timeout."""
        try:
            raw = await asyncio.wait_for(websocket.receive_bytes(), self.timeout)
        except WebSocketDisconnect:
            return None
        value = self.decode(raw)
        if self.model is not None and isinstance(value, dict):
            value = self.model(**value)
        return value

    async def _inputs(self, websocket: WebSocket) -> AsyncIterator[Any]:
        while True:
            try:
                item = await self._receive(websocket)
            except TimeoutError:
                return
            if item is None:
                return
            yield item

    async def _send(self, websocket: WebSocket, output: Any) -> None:
        if hasattr(output, "model_dump"):
            output = output.model_dump(mode="json")
        if not isinstance(output, dict):
            raise TypeError(
                f"a realtime output is a dict or a pydantic model, not {type(output).__name__}"
            )
        await websocket.send_bytes(self.encode(output))

    async def _call(self, app: Any, *inputs: Any) -> Any:
        if inspect.iscoroutinefunction(self.func) or inspect.isasyncgenfunction(self.func):
            result = self.func(app, *inputs)
            return await result if inspect.isawaitable(result) else result
        return await asyncio.to_thread(self.func, app, *inputs)

    async def _unary(self, app: Any, websocket: WebSocket) -> bool:
        waiting: deque[Any] = deque(maxlen=self.buffering)
        arrived = asyncio.Event()
        ended = False
        timed_out = False

        async def read() -> None:
            nonlocal ended, timed_out
            try:
                while (item := await self._receive(websocket)) is not None:
                    waiting.append(item)  # a full buffer drops the oldest input
                    arrived.set()
            except TimeoutError:
                timed_out = True
            ended = True
            arrived.set()

        reader = asyncio.create_task(read())
        try:
            while True:
                if not waiting:
                    if ended:
                        return timed_out
                    arrived.clear()
                    await arrived.wait()
                    continue
                batch = [waiting.popleft()]
                while waiting and len(batch) < self.max_batch_size:
                    batch.append(waiting.popleft())
                await self._send(websocket, await self._call(app, *batch))
        finally:
            reader.cancel()
            with suppress(asyncio.CancelledError, WebSocketDisconnect):
                await reader

    async def _server_streaming(self, app: Any, websocket: WebSocket) -> bool:
        try:
            first = await self._receive(websocket)
        except TimeoutError:
            return True
        if first is None:
            return False
        result = await self._call(app, first)
        if hasattr(result, "__aiter__"):
            async for output in result:
                await self._send(websocket, output)
        else:
            iterator: Iterator[Any] = iter(result)
            done = object()
            while (output := await asyncio.to_thread(next, iterator, done)) is not done:
                await self._send(websocket, output)
        return False

    async def _client_streaming(self, app: Any, websocket: WebSocket) -> bool:
        await self._send(websocket, await self.func(app, self._inputs(websocket)))
        return False

    async def _bidi(self, app: Any, websocket: WebSocket) -> bool:
        result = self.func(app, self._inputs(websocket))
        if inspect.isawaitable(result):
            result = await result
        async for output in result:
            await self._send(websocket, output)
        return False


async def _error(websocket: WebSocket, error: str, reason: str) -> None:
    message = {"type": "x-fal-error", "error": error, "reason": reason}
    with suppress(WebSocketDisconnect, RuntimeError):
        await websocket.send_text(json.dumps(message))
