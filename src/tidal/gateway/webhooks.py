"""fal's queue webhooks, signed.

`POST /queue/{owner}/{app}/{path}?fal_webhook=URL` (or `?webhook=URL`) keeps URL with
the request; once the request completes, whatever the outcome, the platform POSTs::

    {"request_id": ..., "gateway_request_id": ..., "status": "OK" | "ERROR",
     "payload": <the result's JSON, or null>, "error": <message, or null>}

with the headers `X-Fal-Webhook-Request-Id`, `X-Tidal-Webhook-Timestamp` (unix seconds)
and `X-Tidal-Webhook-Signature: v1=<hex>`, where hex is the HMAC-SHA256, keyed with the
platform's webhook secret, of `"{timestamp}.{body}"` (the raw body bytes as sent).

Verifying, on the receiver's side: read the secret from `<data_dir>/webhook.secret`
(created, mode 0600, on the platform's first delivery; the key is the file's text,
whitespace stripped), then `verify(secret, timestamp_header, raw_body, signature_header)`
(or recompute the HMAC and compare in constant time). Check the body before parsing it,
and reject old timestamps (`max_age_s=`) so that a captured delivery cannot be replayed.

A delivery is retried on a connection error or a non-2xx answer, after 1 s, 2 s, 4 s, ...
up to MAX_ATTEMPTS attempts in all. Its state (attempts, delivered or given up) is kept in
the request's row, so deliveries still owed when the platform stopped go out on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from tidal.control.queue_store import QueuedRequest, QueueStore

log = logging.getLogger("tidal.webhooks")

MAX_ATTEMPTS = 5  # attempts in all, the first included
BACKOFF_BASE_S = 1.0  # waits of 1 s, 2 s, 4 s, ... between attempts
TIMEOUT_S = 10.0  # per attempt
SECRET_FILE = "webhook.secret"


def load_secret(data_dir: Path) -> str:
    """The platform's webhook secret; created (0600) on first use."""
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        value = secrets.token_hex(32)
        f.write(value + "\n")
    return value


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: str | int, body: bytes) -> str:
    """The signature header's value: `v1=<hex HMAC-SHA256 of "{timestamp}.{body}">`."""
    message = f"{timestamp}.".encode() + body
    return "v1=" + hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def verify(
    secret: str | bytes,
    timestamp: str | int,
    body: bytes,
    signature: str,
    *,
    max_age_s: float | None = None,
) -> bool:
    """True when `signature` (the X-Tidal-Webhook-Signature header) signs this body at this
    timestamp; with max_age_s, also when the timestamp is no older (nor newer) than that."""
    if max_age_s is not None:
        try:
            if abs(time.time() - int(timestamp)) > max_age_s:
                return False
        except ValueError:
            return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature.strip())


def payload_of(item: QueuedRequest) -> dict[str, Any]:
    ok = item.error is None and item.response_status is not None and item.response_status < 400
    out: dict[str, Any] = {"request_id": item.id, "gateway_request_id": item.id,
                           "status": "OK" if ok else "ERROR", "payload": None,
                           "error": None if ok else (item.error or "the request failed")}  # fmt: skip
    if item.response_body:
        try:
            out["payload"] = json.loads(item.response_body)
        except ValueError:
            out["payload_error"] = "the response is not JSON; fetch it from the response URL"
    return out


class WebhookSender:
    """Delivers webhooks in tasks of their own: the queue's workers never wait on them."""

    def __init__(
        self, store: QueueStore, data_dir: Path, allowed_hosts: Sequence[str] = ()
    ) -> None:
        self.store = store
        self.data_dir = data_dir
        self.allowed_hosts = list(allowed_hosts)
        self._secret: str | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def secret(self) -> str:
        if self._secret is None:
            self._secret = load_secret(self.data_dir)
        return self._secret

    def send(self, item: QueuedRequest) -> None:
        if not item.webhook_url:
            return
        task = asyncio.create_task(self._deliver(item), name=f"webhook-{item.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def resume(self) -> int:
        """After a restart: send what completed requests are still owed."""
        owed = self.store.webhooks_owed()
        for item in owed:
            self.send(item)
        return len(owed)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _deliver(self, item: QueuedRequest) -> None:
        assert item.webhook_url
        body = json.dumps(payload_of(item), separators=(",", ":")).encode()
        # Checked again here: a name may resolve elsewhere now than at submission.
        if problem := await check_destination(item.webhook_url, self.allowed_hosts):
            await asyncio.to_thread(self.store.webhook_finished, item.id, "failed")
            log.error("webhook for %s not sent: %s", item.id, problem)
            return
        attempt = item.webhook_attempts
        while attempt < MAX_ATTEMPTS:
            if attempt:
                await asyncio.sleep(BACKOFF_BASE_S * 2 ** (attempt - 1))
            attempt += 1
            # Its state in the database, written off the event loop.
            await asyncio.to_thread(self.store.webhook_attempted, item.id, attempt)
            problem = await self._post(item, body)
            if problem is None:
                await asyncio.to_thread(self.store.webhook_finished, item.id, "delivered")
                return
            log.warning("webhook for %s, attempt %d/%d: %s",
                        item.id, attempt, MAX_ATTEMPTS, problem)  # fmt: skip
        await asyncio.to_thread(self.store.webhook_finished, item.id, "failed")
        log.error("webhook for %s not delivered after %d attempts", item.id, MAX_ATTEMPTS)

    async def _post(self, item: QueuedRequest, body: bytes) -> str | None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
        timestamp = str(int(time.time()))
        headers = {"content-type": "application/json", "x-fal-webhook-request-id": item.id,
                   "x-tidal-webhook-timestamp": timestamp,
                   "x-tidal-webhook-signature": sign(self.secret(), timestamp, body)}  # fmt: skip
        try:
            assert item.webhook_url
            resp = await self._client.post(item.webhook_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(httpx.HTTPError):
            await resp.aclose()
        return None if 200 <= resp.status_code < 300 else f"HTTP {resp.status_code}"


def destination_problem(host: str, addresses: Sequence[str], allowed: Sequence[str]) -> str | None:
    """Why the platform will not POST a webhook to `host` (which resolved to `addresses`),
    or None. Loopback, link-local, private and other non-public addresses would let any
    caller aim the platform at itself or its network (a metadata service, a database),
    so they need the host, or a network holding each address, in `allowed`."""
    if host.lower().rstrip(".") in {a.lower() for a in allowed}:
        return None
    networks = []
    for entry in allowed:
        with contextlib.suppress(ValueError):
            networks.append(ipaddress.ip_network(entry, strict=False))
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if address.is_global or any(address in net for net in networks):
            continue
        return (
            f"the webhook's host {host!r} is at {address}, a loopback, link-local or private "
            "address, where the platform does not send webhooks; allow it with "
            f'webhook_allowed_hosts = ["{host}"] (or a network, e.g. "{address}/32") '
            "in the platform's tidal.toml"
        )
    return None


async def check_destination(url: str, allowed: Sequence[str]) -> str | None:
    """destination_problem() for a webhook URL, its host resolved here (None: fine)."""
    host = httpx.URL(url).host
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        addresses = [host]
    except ValueError:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, None)
        except OSError as exc:
            return f"the webhook's host {host!r} cannot be resolved ({exc})"
        addresses = sorted({str(info[4][0]) for info in found})
    return destination_problem(host, addresses, allowed)


def valid_url(url: str) -> bool:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)
