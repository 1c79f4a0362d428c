"""What the platform's raw ASGI apps (gateway, file server, dashboard) share: one
shape for the errors they answer themselves, as fal's clients read them, and reading
a request's body."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any


class ClientGone(Exception):
    """The caller went away while sending its request body."""


async def send_error(
    send: Any,
    status: int,
    error_type: str,
    detail: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    body: bool = True,
) -> None:
    """A JSON `{detail, error_type}` answer, the type also in `X-Fal-Error-Type`."""
    content = json.dumps({"detail": detail, "error_type": error_type}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            (b"x-fal-error-type", error_type.encode()),
            *headers,
        ],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": content if body else b""})


async def request_chunks(receive: Any) -> AsyncIterator[bytes]:
    """The request body's chunks as they arrive; ClientGone if the caller hangs up."""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body = message.get("body", b"")
        if body:
            yield body
        more = message.get("more_body", False)


async def read_body(receive: Any, limit: int | None = None) -> bytes:
    """The whole request body; ClientGone if the caller hangs up, OverflowError past
    `limit` bytes. (Not through request_chunks: one request's hot path.)"""
    chunks = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise OverflowError
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)
