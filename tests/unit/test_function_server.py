"""The plain-function server's edges: a call over the size limit is refused, and a
caller that hangs up mid-body runs nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import tidal
from tidal.runtime.function_server import FunctionServer
from tidal.sdk.wire import MAX_CALL_BYTES, encode_call

runs: list[int] = []


@tidal.function()
def record(x: int) -> int:
    runs.append(x)
    return x


def serve(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    feed = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(feed, {"type": "http.disconnect"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    asyncio.run(FunctionServer(record)(scope, receive, send))
    return sent


def test_a_whole_call_runs() -> None:
    runs.clear()
    sent = serve([{"type": "http.request", "body": encode_call((7,), {}), "more_body": False}])
    assert sent[0]["status"] == 200 and runs == [7]


def test_a_call_over_the_limit_is_413_and_never_runs() -> None:
    runs.clear()
    half = b"x" * (MAX_CALL_BYTES // 2 + 1)
    sent = serve([{"type": "http.request", "body": half, "more_body": True}] * 2)
    assert sent[0]["status"] == 413 and runs == []


def test_a_caller_gone_mid_call_runs_nothing() -> None:
    runs.clear()
    call = encode_call((7,), {})
    sent = serve([{"type": "http.request", "body": call[:5], "more_body": True}])
    assert sent == [] and runs == []
