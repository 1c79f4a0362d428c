"""The sync proxy: `/{owner}/{app}/{path...}` forwarded to a runner unchanged.

A raw ASGI app (no framework on the hot path). Method, path, query, headers and
body go to the runner as sent; status, headers and body come back as the runner
sent them, streamed both ways. Hop-by-hop headers are the only ones dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from yarl import URL

from tidal.backends.base import Runner
from tidal.gateway.router import RouterError
from tidal.gateway.upstream import session_for
from tidal.scaling.controller import Controller, Deployment

log = logging.getLogger("tidal.gateway")

Scope = dict[str, Any]
Message = dict[str, Any]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
REQUEST_ID_HEADER = b"x-tidal-request-id"
# Bodies up to this size are read whole before forwarding (one write upstream);
# larger or chunked ones stream through.
BUFFER_LIMIT = 64 * 1024


class ClientGone(Exception):
    pass


class Gateway:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def forget(self, runner: Runner) -> None:
        session = self._sessions.pop(runner.id, None)
        if session is not None:
            task = asyncio.ensure_future(session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _session(self, runner: Runner) -> aiohttp.ClientSession:
        session = self._sessions.get(runner.id)
        if session is None:
            assert runner.address is not None
            session = self._sessions[runner.id] = session_for(runner.address)
        return session

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        parts = scope["path"].split("/", 3)
        if len(parts) < 3 or not parts[1] or not parts[2]:
            await send_json(send, 404, "not_found", "no such path; apps live at /{owner}/{app}/...")
            return
        owner, app = parts[1], parts[2]
        dep = self.controller.deployments.get((owner, app))
        if dep is None:
            await send_json(send, 404, "app_not_found",
                            f"no app {app!r} deployed for owner {owner!r}; see `tidal apps list`")  # fmt: skip
            return
        request_id = uuid.uuid4().hex
        timeout = (
            dep.record.options.request_timeout or self.controller.config.default_request_timeout
        )
        progress = _Progress()
        try:
            async with asyncio.timeout(timeout):
                upstream = await _Upstream.from_scope(scope, receive, dep, request_id)
                # A connection that could not be made sent nothing: safe to try another
                # runner once, when the body can be sent again.
                attempts = 2 if upstream.replayable else 1
                for attempt in range(attempts):
                    runner = await dep.router.acquire()
                    progress.runner_id = runner.id
                    try:
                        await self._forward(send, runner, upstream, progress)
                        return
                    except aiohttp.ClientConnectorError:
                        self.controller.suspect(dep, runner)
                        if attempt + 1 == attempts:
                            raise
                    except (aiohttp.ClientError, OSError):
                        self.controller.suspect(dep, runner)
                        raise
                    finally:
                        dep.router.release(runner)
        except RouterError as exc:
            await send_json(send, exc.status, exc.error_type, exc.detail, request_id)
        except TimeoutError:
            if not progress.started:
                await send_json(send, 504, "request_timeout",
                                f"the request did not finish within request_timeout ({timeout}s)",
                                request_id)  # fmt: skip
        except ClientGone:
            pass
        except (aiohttp.ClientError, OSError) as exc:
            if not progress.started:
                await send_json(send, 502, "runner_connection_error",
                                f"runner {progress.runner_id} closed the connection before "
                                f"answering ({type(exc).__name__}: {exc}); the request was "
                                "not retried", request_id)  # fmt: skip

    async def _forward(
        self, send: Any, runner: Runner, upstream: _Upstream, progress: _Progress
    ) -> None:
        assert runner.address is not None
        url = URL.build(
            scheme="http", host=runner.address.host, port=runner.address.port,
            path=upstream.path, query_string=upstream.query, encoded=True,
        )  # fmt: skip
        async with self._session(runner).request(
            upstream.method, url, headers=upstream.headers, data=upstream.data,
            allow_redirects=False, compress=False,
        ) as resp:  # fmt: skip
            out = [(k, v) for k, v in resp.raw_headers if k.lower() not in HOP_BY_HOP]
            out.append((REQUEST_ID_HEADER, upstream.request_id.encode()))
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            progress.started = True
            if upstream.method != "HEAD":
                async for chunk in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Upstream:
    """The request as the runner will get it."""

    __slots__ = ("data", "headers", "method", "path", "query", "request_id")

    def __init__(
        self, method: str, path: str, query: str, headers: list[tuple[str, str]],
        data: bytes | AsyncIterator[bytes] | None, request_id: str,
    ) -> None:  # fmt: skip
        self.method, self.path, self.query = method, path, query
        self.headers, self.data, self.request_id = headers, data, request_id

    @property
    def replayable(self) -> bool:
        return self.data is None or isinstance(self.data, bytes)

    @classmethod
    async def from_scope(
        cls, scope: Scope, receive: Any, dep: Deployment, request_id: str
    ) -> _Upstream:
        prefix = f"/{dep.record.owner}/{dep.record.name}"
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        headers: list[tuple[str, str]] = []
        length: int | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
            if name not in HOP_BY_HOP:
                headers.append((name.decode("latin-1"), value.decode("latin-1")))
        client = scope.get("client")
        if client:
            headers.append(("x-forwarded-for", client[0]))
        headers.append(("x-forwarded-proto", scope.get("scheme", "http")))
        headers.append(("x-forwarded-prefix", prefix))
        headers.append(("x-tidal-request-id", request_id))
        data: bytes | AsyncIterator[bytes] | None = None
        if chunked or (length is not None and length > BUFFER_LIMIT):
            data = _stream_body(receive)
        elif length:
            data = await _read_body(receive)
        return cls(
            scope["method"], raw_path[len(prefix):].decode("latin-1") or "/",
            scope["query_string"].decode("latin-1"), headers, data, request_id,
        )  # fmt: skip


class _Progress:
    __slots__ = ("runner_id", "started")

    def __init__(self) -> None:
        self.started = False
        self.runner_id = ""


async def _read_body(receive: Any) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _stream_body(receive: Any) -> AsyncIterator[bytes]:
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        yield message.get("body", b"")
        more = message.get("more_body", False)


async def send_json(
    send: Any, status: int, error_type: str, detail: str, request_id: str | None = None
) -> None:
    body = json.dumps({"detail": detail, "error_type": error_type}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-fal-error-type", error_type.encode()),
    ]
    if request_id:
        headers.append((REQUEST_ID_HEADER, request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
