"""The queue's frequent calls on the raw ASGI scope: submits, status polls and results.
Routing and dependency solving in the API framework cost more than the rest of any of
them (profiled under bench/queue_throughput.py), so these are answered here and
anything else falls through to the router (tidal.gateway.queue.queue_router): an
unknown request (its 404), a status stream, a cancel, a query this does not know.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from tidal.asgi import ClientGone, read_body, send_error
from tidal.control.queue_store import COMPLETED, IN_QUEUE, QueuedRequest, new_request
from tidal.gateway.webhooks import check_destination, valid_url

if TYPE_CHECKING:
    from tidal.gateway.queue import QueueService

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
FastPath = Callable[[dict[str, Any], Receive, Send], Awaitable[bool]]

# Headers kept with a queued request (the caller's content negotiation and own
# x-* headers); hop-by-hop and credentials are not stored.
_DROP = {"host", "content-length", "connection", "authorization", "transfer-encoding", "cookie"}
# `?logs=` as a boolean query parameter is spelled (what fal-client sends: false/true).
_LOGS = {b"": False, b"logs=0": False, b"logs=false": False, b"logs=False": False,
         b"logs=1": True, b"logs=true": True, b"logs=True": True}  # fmt: skip
# Of a runner's answer, the headers a queued request's result is returned with.
_RESULT_HEADERS = {"content-type", "x-fal-error-type"}


def queue_fast_path(service: QueueService, owner_apps: Any) -> FastPath:
    """Answer a `/queue/...` call here if it is one of the frequent ones; False (nothing
    sent) for what the router answers. `owner_apps` resolves (owner, app) to a
    Deployment."""

    async def answer(scope: dict[str, Any], receive: Receive, send: Send) -> bool:
        method = scope["method"]
        if method == "GET":
            return await _get(service, scope, send)
        if method != "POST":
            return False
        parts = scope["path"].split("/", 4)  # "", "queue", owner, app, the endpoint's path
        if len(parts) < 4 or not parts[2] or not parts[3]:
            return False
        path = parts[4] if len(parts) == 5 else ""
        with contextlib.suppress(ClientGone):  # nothing stored, no one left to answer
            await _submit(service, owner_apps, parts[2], parts[3], path, scope, receive, send)
        return True

    return answer


async def _get(service: QueueService, scope: dict[str, Any], send: Send) -> bool:
    """`GET .../requests/{id}/status` and `GET .../requests/{id}`."""
    parts = scope["path"].split("/")
    if len(parts) == 7 and parts[4] == "requests" and parts[6] == "status":
        logs = _LOGS.get(scope.get("query_string", b""))
        if logs is None:
            return False
    elif len(parts) == 6 and parts[4] == "requests" and not scope.get("query_string"):
        logs = None  # the result
    else:
        return False
    owner, app, request_id = parts[2], parts[3], parts[5]
    # From memory where this platform holds it; else (an older result, or a request
    # another platform sharing the queue holds) from the database, in a thread.
    item = await (service.get(request_id) if logs is None else service.status_of(request_id))
    if item is None or (item.owner, item.app) != (owner, app):
        return False  # the router's 404
    if logs is None:
        await _result(item, send)
        return True
    base = base_url(scope)
    if base is None:
        return False
    view = await service.status_view(base, item, logs)
    await _json(send, 200 if item.status == COMPLETED else 202, view)
    return True


async def _result(item: QueuedRequest, send: Send) -> None:
    """The runner's answer, as the router's result route gives it."""
    if item.status != COMPLETED:
        await _json(send, 400, {"detail": f"the request is {item.status}"})
    elif item.response_status is None:
        code = 400 if item.error_type == "request_cancelled" else 500
        await _json(send, code, {"detail": item.error, "error_type": item.error_type},
                    [(b"x-fal-error-type", (item.error_type or "").encode("latin-1"))])  # fmt: skip
    else:
        body = item.response_body or b""
        headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in item.response_headers
            if k.lower() in _RESULT_HEADERS
        ]
        await _send(send, item.response_status, body, headers)


async def _submit(
    service: QueueService, owner_apps: Any, owner: str, app: str, path: str,
    scope: dict[str, Any], receive: Receive, send: Send,
) -> None:  # fmt: skip
    """`POST /queue/{owner}/{app}/{path}`: store the request, answer its id and URLs."""
    if owner_apps(owner, app) is None:
        await send_error(send, 404, "app_not_found", f"no app {app!r} deployed for owner {owner!r}")
        return
    raw = scope["headers"]
    limit = service.controller.config.queue_body_limit_bytes
    declared = next((v for k, v in raw if k == b"content-length"), b"")
    try:
        if declared.isdigit() and int(declared) > limit:
            raise OverflowError
        body = await read_body(receive, limit)
    except OverflowError:
        await send_error(send, 413, "payload_too_large",
                         f"the request body is over the queue's limit of {limit} bytes "
                         "(queue_body_limit_bytes in the platform's tidal.toml); send large "
                         "inputs as files (a URL the app downloads) instead")  # fmt: skip
        return
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    given: dict[str, str] = {}
    for k, v in headers:
        given.setdefault(k.lower(), v)  # the first of each name, as the router reads it
    kept = [(k, v) for k, v in headers if k.lower() not in _DROP]
    if "host" in given and "x-forwarded-host" not in given:
        # The runner builds URLs (tidal.toolkit.File) from the host the caller used,
        # not from its own address, which is all a stored request would show it.
        kept.append(("x-forwarded-host", given["host"]))
    priority = 1 if given.get("x-fal-queue-priority", "normal") == "low" else 0
    no_retry = given.get("x-fal-no-retry", "") not in ("", "0", "false")
    query = scope.get("query_string", b"").decode("latin-1")
    webhook = None
    if "webhook" in query:
        params = parse_qsl(query, keep_blank_values=True)
        found = dict(params)  # the last of each name, as the router reads it
        webhook = found.get("fal_webhook") or found.get("webhook")
        if webhook is not None:
            problem = (
                f"the webhook URL {webhook!r} is not an http(s) URL"
                if not valid_url(webhook)
                else await check_destination(webhook, service.webhooks.allowed_hosts)
            )
            if problem:
                await send_error(send, 422, "invalid_webhook_url", problem)
                return
            # The webhook parameters are the queue's, not the endpoint's.
            query = urlencode([(k, v) for k, v in params if k not in ("fal_webhook", "webhook")])
    item = new_request(owner, app, "POST", "/" + path if path else "/", query, kept, body,
                       priority, no_retry, webhook)  # fmt: skip
    position = await service.submit(item)
    base = base_url(scope) or "/"
    await _json(send, 200,
                {"status": IN_QUEUE, "request_id": item.id,
                 **urls_of(base, owner, app, item.id), "queue_position": position},
                [(b"x-fal-request-id", item.id.encode())])  # fmt: skip


def base_url(scope: dict[str, Any]) -> str | None:
    """The URL the caller reached the platform at (its Host header), with a trailing /."""
    host = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1")
    if not host:
        server = scope.get("server")
        if not server:
            return None
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}/"


def urls_of(base_url: str, owner: str, app: str, request_id: str) -> dict[str, str]:
    base = f"{base_url.rstrip('/')}/queue/{owner}/{app}/requests/{request_id}"
    return {"response_url": base, "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel"}  # fmt: skip


async def _json(
    send: Send, status: int, payload: dict[str, Any],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:  # fmt: skip
    await _send(send, status, json.dumps(payload).encode(),
                [(b"content-type", b"application/json"), *(headers or [])])  # fmt: skip


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", b"%d" % len(body))]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
