"""What the platform's raw ASGI apps (gateway, file server) share: one shape for
the errors they answer themselves, as fal's clients read them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


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
