"""The sync proxy: `/{owner}/{app}/{path...}` forwarded to a runner unchanged.

A raw ASGI app (no framework on the hot path). Method, path, query, headers and
body go to the runner as sent; status, headers and body come back as the runner
sent them, streamed both ways. Hop-by-hop headers are the only ones dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from tidal.asgi import ClientGone, read_body, request_chunks, send_error
from tidal.backends.base import Runner
from tidal.domain.router import AppRouter, RouterError
from tidal.gateway.affinity import affinity_key
from tidal.gateway.http1 import UpstreamConnectError, UpstreamConnection, UpstreamPool
from tidal.gateway.paths import redirect_to_slash, wants_slash
from tidal.gateway.websocket import proxy_websocket
from tidal.observe.records import SYNC, RequestRecord, cold_start_of, error_message
from tidal.scaling.controller import Controller, Deployment

if TYPE_CHECKING:
    from tidal.observe.records import Recorder

Scope = dict[str, Any]

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    # uvicorn already answered the caller's `Expect: 100-continue`.
    b"expect",
})  # fmt: skip
REQUEST_ID_HEADER = b"x-tidal-request-id"
# Bodies up to this size are read whole and sent in one write; larger or
# chunked ones stream through.
BUFFER_LIMIT = 64 * 1024
# Of an error answer's body, this much is kept for the request record (its message).
ERROR_BODY_KEPT = 4096


class _StartTimeout(Exception):
    def __init__(self, limit: float) -> None:
        self.limit = limit


class Gateway:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self._pools: dict[str, UpstreamPool] = {}
        # Each finished request is handed to it (tidal.observe.records), if set.
        self.recorder: Recorder | None = None

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def forget(self, runner: Runner) -> None:
        pool = self._pools.pop(runner.id, None)
        if pool is not None:
            pool.close()

    def _pool(self, runner: Runner) -> UpstreamPool:
        pool = self._pools.get(runner.id)
        if pool is None:
            assert runner.address is not None
            pool = self._pools[runner.id] = UpstreamPool(runner.address)
        return pool

    async def websocket(self, scope: Scope, receive: Any, send: Any) -> None:
        parts = scope["path"].split("/", 3)
        dep = self.controller.deployments.get((parts[1], parts[2])) if len(parts) >= 3 else None
        if dep is None:
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        await proxy_websocket(scope, receive, send, dep, self.controller)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        parts = scope["path"].split("/", 3)
        if len(parts) < 3 or not parts[1] or not parts[2]:
            await send_error(
                send, 404, "not_found", "no such path; apps live at /{owner}/{app}/..."
            )
            return
        owner, app = parts[1], parts[2]
        dep = self.controller.deployments.get((owner, app))
        if dep is None:
            await send_error(send, 404, "app_not_found",
                            f"no app {app!r} deployed for owner {owner!r}; see `tidal apps list`")  # fmt: skip
            return
        if wants_slash(scope, parts):
            await redirect_to_slash(scope, send)
            return
        request_id = uuid.uuid4().hex
        ids = [(REQUEST_ID_HEADER, request_id.encode()), (b"x-fal-request-id", request_id.encode())]
        timeout = (
            dep.record.options.request_timeout or self.controller.config.default_request_timeout
        )
        progress = _Progress()
        progress.arrived = time.time()
        try:
            await self._serve(scope, receive, send, dep, request_id, ids, timeout, progress)
        finally:
            if self.recorder is not None:
                self.recorder.add(progress.record(scope, dep, request_id))

    async def _serve(
        self, scope: Scope, receive: Any, send: Any, dep: Deployment, request_id: str,
        ids: list[tuple[bytes, bytes]], timeout: float, progress: _Progress,
    ) -> None:  # fmt: skip
        try:
            async with asyncio.timeout(timeout):
                upstream = await _Upstream.from_scope(scope, receive, dep, request_id)
                # A connection that could not be made sent nothing: safe to try another
                # runner once, when the body can be sent again.
                attempts = 2 if upstream.replayable else 1
                start_limit = upstream.start_timeout
                for attempt in range(attempts):
                    runner = await _slot(dep, upstream, receive, progress, start_limit)
                    runner = dep.router.prefer(runner, upstream.runner_hint)
                    progress.runner_id = runner.id
                    progress.runner, progress.acquired = runner, time.time()
                    try:
                        await self._forward(send, runner, upstream, progress, receive, dep.router)
                        return
                    except UpstreamConnectError:
                        self.controller.suspect(dep, runner)
                        if attempt + 1 == attempts:
                            raise
                    except OSError:
                        if progress.caller_left:
                            # The caller hung up; the runner did nothing wrong.
                            progress.failed(499, "client_closed_request", "the caller went away")
                            return
                        self.controller.suspect(dep, runner)
                        raise
                    finally:
                        if progress.long_lived:
                            dep.router.close_long_lived(runner)
                        else:
                            dep.router.release(runner)
        except _StartTimeout as exc:
            progress.failed(504, "request_timeout", f"no runner within {exc.limit:g}s")
            await send_error(send, 504, "request_timeout",
                             f"no runner took the request within X-Fal-Request-Timeout "
                             f"({exc.limit:g}s)", [*ids, (b"x-fal-request-timeout-type", b"user")])  # fmt: skip
        except RouterError as exc:
            progress.failed(exc.status, exc.error_type, exc.detail)
            extra = [(b"retry-after", b"%d" % exc.retry_after)] if exc.retry_after else []
            await send_error(send, exc.status, exc.error_type, exc.detail, [*ids, *extra])
        except TimeoutError:
            # Which, as fal's X-Fal-Request-Timeout-Type says who set a timeout: a request
            # that never got a runner did not run at all, and is safe to send again.
            waited = not progress.acquired
            detail = (
                f"the request waited request_timeout ({timeout}s) for a free runner and never "
                "started; retry later, or raise max_concurrency"
                if waited
                else f"the request did not finish within request_timeout ({timeout}s)"
            )
            progress.failed(504, "request_timeout", detail)
            if not progress.started:
                kind = b"waiting" if waited else b"running"
                await send_error(send, 504, "request_timeout", detail,
                                 [*ids, (b"x-fal-request-timeout-type", kind)])  # fmt: skip
        except ClientGone:
            progress.failed(499, "client_closed_request", "the caller went away")
        except OSError as exc:
            progress.failed(502, "runner_connection_error", f"runner failed: {exc}")
            if not progress.started:
                await send_error(send, 502, "runner_connection_error",
                                 f"runner {progress.runner_id} failed before answering ({exc}); "
                                 "the request was not retried", ids)  # fmt: skip

    async def _forward(
        self,
        send: Any,
        runner: Runner,
        upstream: _Upstream,
        progress: _Progress,
        receive: Any = None,
        router: AppRouter | None = None,
    ) -> None:
        pool = self._pool(runner)
        conn = await pool.acquire()
        watcher: asyncio.Task[None] | None = None

        def watch() -> None:
            # Only for requests still running after a second: a caller that hangs up
            # then cancels the runner's work (its connection closes) at no cost to the
            # many short requests.
            nonlocal watcher
            watcher = asyncio.ensure_future(_close_when_caller_leaves(receive, conn, progress))

        loop = asyncio.get_running_loop()
        began = loop.time()
        timer: asyncio.TimerHandle | None = None
        try:
            await upstream.write(conn, pool.host_header)
            if receive is not None:
                # Not before the body is all sent: until then its messages are the
                # upload's, and a hang-up shows as ClientGone while reading them.
                timer = loop.call_later(max(0.0, 1.0 - (loop.time() - began)), watch)
            await conn.read_head(head_only=upstream.method == b"HEAD")
            progress.status = conn.status
            keep = conn.status >= 400  # the error's type and message go in its record
            if keep:
                progress.error_type = next(
                    (v.decode("latin-1") for k, v in conn.headers if k.lower() == b"x-fal-error-type"),
                    None,
                )  # fmt: skip
            if router is not None and _event_stream(conn.headers):
                # A long-lived stream (the app's long_lived option): its request slot may
                # go back to the runner for other requests while it streams.
                progress.long_lived = router.to_long_lived(runner)
            if upstream.set_cookie:
                conn.headers.append((b"set-cookie", upstream.set_cookie))
            conn.headers.append((REQUEST_ID_HEADER, upstream.request_id.encode()))
            conn.headers.append((b"x-fal-request-id", upstream.request_id.encode()))
            await send({"type": "http.response.start", "status": conn.status,
                        "headers": [h for h in conn.headers if h[0].lower() not in HOP_BY_HOP]})  # fmt: skip
            progress.started = True
            async for chunk in conn.body():
                if keep and len(progress.error_body) < ERROR_BODY_KEPT:
                    progress.error_body += chunk[: ERROR_BODY_KEPT - len(progress.error_body)]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if timer is not None:
                timer.cancel()
            if watcher is not None:
                watcher.cancel()
            pool.release(conn)


async def _slot(
    dep: Deployment, upstream: _Upstream, receive: Any, progress: _Progress,
    start_limit: float | None,
) -> Runner:  # fmt: skip
    """A runner slot for the request. While it waits for one, the caller's connection
    is watched (once its body is read, which a streamed body is not yet): a caller who
    hangs up meanwhile is never forwarded later (ClientGone)."""
    key = upstream.affinity
    if receive is None or not upstream.replayable or dep.router.has_free_slot(key):
        if start_limit is None:
            return await dep.router.acquire(key)
        try:
            return await asyncio.wait_for(dep.router.acquire(key), start_limit)
        except TimeoutError:
            raise _StartTimeout(start_limit) from None
    waiting = asyncio.ensure_future(dep.router.acquire(key))
    left = asyncio.ensure_future(_caller_left(receive))
    taken = False
    try:
        await asyncio.wait((waiting, left), timeout=start_limit,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if left.done():
            progress.caller_left = True
            raise ClientGone
        if not waiting.done():
            assert start_limit is not None
            raise _StartTimeout(start_limit)
        runner = waiting.result()
        taken = True
        return runner
    finally:
        left.cancel()
        if not waiting.done():
            waiting.cancel()  # the router gives back a slot handed to it meanwhile
        elif not taken and not waiting.cancelled() and waiting.exception() is None:
            dep.router.release(waiting.result())


async def _caller_left(receive: Any) -> None:
    """Returns when the caller hangs up (its body was read before)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _close_when_caller_leaves(
    receive: Any, conn: UpstreamConnection, progress: _Progress
) -> None:
    await _caller_left(receive)
    progress.caller_left = True
    conn.close()


class _Upstream:
    """The request as the runner will get it: the head as bytes, and the body."""

    __slots__ = ("affinity", "body", "has_host", "head", "method", "request_id", "runner_hint",
                 "set_cookie", "start_timeout", "stream")  # fmt: skip

    def __init__(self) -> None:
        self.method = b""
        self.head = b""
        self.has_host = False
        self.request_id = ""
        self.body = b""
        self.stream: AsyncIterator[bytes] | None = None
        # fal's X-Fal-Request-Timeout: how long the caller lets the request wait to start.
        self.start_timeout: float | None = None
        # fal's X-Fal-Runner-Hint: send requests with the same hint to the same runner.
        self.runner_hint: str | None = None
        # The app's session affinity key (tidal.gateway.affinity), and a cookie minted for it.
        self.affinity: str | None = None
        self.set_cookie: bytes | None = None

    @property
    def replayable(self) -> bool:
        return self.stream is None

    @classmethod
    async def from_scope(
        cls, scope: Scope, receive: Any, dep: Deployment, request_id: str
    ) -> _Upstream:
        self = cls()
        self.request_id = request_id
        self.method = scope["method"].encode()
        prefix = f"/{dep.record.owner}/{dep.record.name}"
        self.affinity, self.set_cookie = affinity_key(scope, dep.record.options.affinity, prefix)
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path = raw_path[len(prefix) :] or b"/"
        query: bytes = scope["query_string"]
        lines = [self.method, b" ", path, b"?" + query if query else b"", b" HTTP/1.1\r\n"]
        length: int | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"host":
                self.has_host = True
            elif name == b"x-fal-request-timeout":
                with contextlib.suppress(ValueError):
                    self.start_timeout = max(0.0, float(value))
            elif name == b"x-fal-runner-hint":
                self.runner_hint = value.decode("latin-1").strip()[:256] or None
            if name not in HOP_BY_HOP:
                lines += (name, b": ", value, b"\r\n")
        client = scope.get("client")
        if client:
            lines += (b"x-forwarded-for: ", client[0].encode(), b"\r\n")
        lines += (b"x-forwarded-proto: ", scope.get("scheme", "http").encode(), b"\r\n")
        lines += (b"x-forwarded-prefix: ", prefix.encode(), b"\r\n")
        lines += (REQUEST_ID_HEADER, b": ", request_id.encode(), b"\r\n")
        if chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
            self.stream = _chunked(request_chunks(receive))
        elif length is not None and length > BUFFER_LIMIT:
            self.stream = request_chunks(receive)
        elif length:
            self.body = await read_body(receive)
        self.head = b"".join(lines)
        return self

    async def write(self, conn: UpstreamConnection, host_header: bytes) -> None:
        head = self.head if self.has_host else self.head + b"host: " + host_header + b"\r\n"
        conn.write(head + b"\r\n" + self.body)
        if self.stream is not None:
            async for chunk in self.stream:
                conn.write(chunk)
                await conn.drain()


class _Progress:
    __slots__ = ("acquired", "arrived", "caller_left", "error", "error_body", "error_type",
                 "long_lived", "runner", "runner_id", "started", "status")  # fmt: skip

    def __init__(self) -> None:
        self.started = False
        self.caller_left = False
        # Its slot became a long-lived place (an event stream): closed, not released.
        self.long_lived = False
        self.runner_id = ""
        # For the request's record: wall-clock times, the runner, the outcome.
        self.arrived = self.acquired = 0.0
        self.runner: Runner | None = None
        self.status: int | None = None
        self.error_type: str | None = None
        self.error: str | None = None
        self.error_body = b""

    def failed(self, status: int, error_type: str, detail: str) -> None:
        """The platform's own answer (or the outcome, where the runner's had started)."""
        if self.status is None or not self.started:
            self.status = status
        self.error_type, self.error = error_type, detail

    def record(self, scope: Scope, dep: Deployment, request_id: str) -> RequestRecord:
        finished = time.time()
        acquired = self.acquired or finished
        cold, cold_ms, breakdown = cold_start_of(self.runner, self.arrived, acquired)
        prefix_length = len(dep.record.owner) + len(dep.record.name) + 2
        error = self.error
        if error is None and self.error_body:
            error = error_message(self.error_body, self.status)
        return RequestRecord(
            id=request_id, owner=dep.record.owner, app=dep.record.name,
            endpoint=scope["path"][prefix_length:] or "/", method=scope["method"], kind=SYNC,
            started_at=self.arrived, finished_at=finished,
            latency_ms=(finished - self.arrived) * 1000,
            queue_wait_ms=(acquired - self.arrived) * 1000, status_code=self.status,
            error_type=self.error_type or (f"http_{self.status}" if error else None),
            error=error, revision=self.runner.revision if self.runner else None,
            runner_id=self.runner_id or None, cold_start=cold, cold_start_ms=cold_ms,
            cold_breakdown=breakdown,
        )  # fmt: skip


def _event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        k.lower() == b"content-type" and v.lower().startswith(b"text/event-stream")
        for k, v in headers
    )


async def _chunked(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield b"%x\r\n%b\r\n" % (len(chunk), chunk)
    yield b"0\r\n\r\n"
