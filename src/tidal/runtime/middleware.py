"""The App runner's ASGI middlewares share one shape: an HTTP request goes through
the middleware's `http`, anything else (lifespan, WebSocket) straight to the app."""

from __future__ import annotations

from typing import Any


class HttpMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise NotImplementedError
