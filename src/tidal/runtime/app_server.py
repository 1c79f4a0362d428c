"""Serving a `tidal.App`: its endpoints as a FastAPI app on the runner's port.

The same `build_asgi` gives the OpenAPI document at deploy time (without
running `setup()`), so the document always matches what the runner serves.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from tidal.runtime import request_logs
from tidal.runtime.listening import ListeningServer
from tidal.runtime.middleware import HttpMiddleware
from tidal.runtime.request_logs import RequestContext
from tidal.sdk.app import App, endpoints
from tidal.sdk.exceptions import error_answer

log = logging.getLogger("tidal.runtime")


async def call_maybe_async(fn: Any) -> Any:
    result = fn()
    if inspect.isawaitable(result):
        result = await result
    return result


def _skip_pydantic_v1_probe() -> None:
    """FastAPI imports pydantic.v1 (100+ ms) only to ask whether a class or value is one
    of its models, and nothing can be unless something imported pydantic.v1 already:
    ask that first. Only where FastAPI has these probes (else nothing changes)."""
    shared = sys.modules.get("fastapi._compat.shared")
    encoders = sys.modules.get("fastapi.encoders")
    for module, name in ((shared, "is_pydantic_v1_model_class"),
                         (shared, "is_pydantic_v1_model_instance"),
                         (encoders, "is_pydantic_v1_model_instance")):  # fmt: skip
        probe = getattr(module, name, None)
        if probe is None or getattr(probe, "_tidal_guarded", False):
            continue

        def guarded(obj: Any, _probe: Callable[[Any], bool] = probe) -> bool:
            return "pydantic.v1" in sys.modules and _probe(obj)

        guarded._tidal_guarded = True  # type: ignore[attr-defined]
        setattr(module, name, guarded)


def build_asgi(app_cls: type[App]) -> FastAPI:
    """A FastAPI app routing each `@endpoint` to a method of one instance.

    `setup()` runs in the lifespan's startup, before uvicorn binds the port, so
    the runner answers (and the platform calls it ready) only once it is done.
    """
    _skip_pydantic_v1_probe()
    obj = app_cls()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        print(f"tidal runtime: running {app_cls.__name__}.setup()", flush=True)
        try:
            await call_maybe_async(obj.setup)
        except BaseException as exc:
            traceback.print_exc()
            # The last line is what `tidal runners list` shows as the reason.
            print(f"tidal runtime: setup() failed: {type(exc).__name__}: {exc}", flush=True)
            os._exit(1)
        yield
        # SIGTERM (scale-down, delete, redeploy) ends here after in-flight requests.
        try:
            await call_maybe_async(obj.teardown)
        except Exception:
            log.exception("teardown() failed")

    api = FastAPI(
        title=app_cls.app_name or app_cls.__name__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )

    api.add_middleware(_EndpointErrors)
    api.add_middleware(_CancelOnDisconnect)
    api.add_middleware(RequestContext)  # outermost: errors are logged under the request

    paths = set()
    for attr, spec in endpoints(app_cls):
        handler = getattr(obj, attr)
        paths.add(spec.path)
        if spec.is_websocket:
            api.add_api_websocket_route(spec.path, handler)
        else:
            api.add_api_route(spec.path, handler, methods=[spec.method])
    if "/health" not in paths:

        @api.get("/health", include_in_schema=False)
        async def health() -> dict[str, str]:
            return {"status": "ok"}

    return api


def prepare_app(app_cls: type[App], host: str = "127.0.0.1") -> uvicorn.Config:
    """Everything serving needs short of `setup()` and the port: the ASGI app built and
    uvicorn's protocol, loop and lifespan classes loaded (a template does this ahead)."""
    config = uvicorn.Config(
        build_asgi(app_cls), host=host, port=0, log_level="info", access_log=False,
        timeout_graceful_shutdown=30,
    )  # fmt: skip
    config.load()
    return config


def serve_app(
    app_cls: type[App],
    port: int,
    host: str = "127.0.0.1",
    prepared: uvicorn.Config | None = None,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Set up, then serve on host:port until SIGTERM (then `teardown()`).
    `on_listening` is called once the port takes connections."""
    request_logs.install()
    config = prepared or prepare_app(app_cls, host)
    if prepared is not None:
        config.configure_logging()  # onto this runner's (request-logged) stderr
    config.host, config.port = host, port
    ListeningServer(config, on_listening).run()


def openapi_of(app_cls: type[App]) -> dict[str, Any]:
    document: dict[str, Any] = build_asgi(app_cls).openapi()
    return document


class _EndpointErrors(HttpMiddleware):
    """An exception in an endpoint: 500 JSON with its type and message, the
    traceback in the runner's log, and the runner (and the connection) stays up;
    fal's exceptions (`tidal.sdk.exceptions`) get fal's answer instead.

    A raw middleware rather than an exception handler: Starlette re-raises from
    those after answering, and the server then drops the keep-alive connection.
    """

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = False

        async def tracking(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            answer = None if started else error_answer(exc)
            if answer is not None:  # fal's exceptions are answers, not failures
                response = Response(answer.body, answer.status, headers=answer.headers)
                await response(scope, receive, send)
                return
            print(
                f"tidal: {scope['method']} {scope['path']} failed:\n"
                + "".join(traceback.format_exception(exc)),
                flush=True,
            )
            if started:
                raise  # too late for a clean answer
            response = JSONResponse(
                {"detail": str(exc) or type(exc).__name__, "error_type": type(exc).__name__},
                status_code=500,
                headers={"x-fal-error-type": type(exc).__name__},
            )
            await response(scope, receive, send)


class _CancelOnDisconnect(HttpMiddleware):
    """The caller went away (it hung up, or the request was cancelled and the gateway
    closed the connection): cancel the endpoint, which sees `asyncio.CancelledError`,
    as fal's "handle request cancellations" describes. Once the endpoint has read the
    whole body, nothing else is expected from the caller but a disconnect."""

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body_read = asyncio.Event()
        finished = False

        async def tracked_receive() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_read.set()
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal finished
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        endpoint = asyncio.ensure_future(self.app(scope, tracked_receive, tracked_send))

        async def watch() -> None:
            await body_read.wait()
            while not finished:
                if (await receive())["type"] == "http.disconnect":
                    if not finished:
                        print(
                            f"tidal: {scope['path']}: the caller went away; cancelling", flush=True
                        )
                        endpoint.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await endpoint
        except asyncio.CancelledError:
            if not watcher.done() or watcher.cancelled():
                raise  # cancelled from outside (shutdown), not by the caller
        finally:
            watcher.cancel()
