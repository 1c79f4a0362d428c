"""Bounds on what a caller may send before the platform answers: the request head's
size and the time to send it, and the pause allowed while a body is being sent.

uvicorn's httptools protocol has none of these (a 64 MiB header, or a head sent a
byte a minute, is read to the end), so a subclass adds them per connection: a head
over `head_limit` bytes gets 431, a head not complete within `head_timeout` seconds
gets 408, and a body that stops arriving for `body_idle_timeout` seconds (counted while the
platform is ready to read it) closes the connection, which the gateway sees as the
caller leaving (499), freeing the runner's slot.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class BoundedHttpProtocol(HttpToolsProtocol):
    head_limit = 64 * 1024
    head_timeout = 10.0
    body_idle_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self._reading_since: float | None = None  # seen reading the body since

    @classmethod
    def with_limits(
        cls, head_limit: int, head_timeout: float, body_idle_timeout: float
    ) -> type[BoundedHttpProtocol]:
        limits = {"head_limit": head_limit, "head_timeout": head_timeout,
                  "body_idle_timeout": body_idle_timeout}  # fmt: skip
        return type("BoundedHttpProtocol", (cls,), limits)

    # -- the head ---------------------------------------------------------
    def _await_head(self) -> None:
        self._in_head, self._head_bytes = True, 0
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _head_too_slow(self) -> None:
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, "the request head did not arrive in time")

    def _refuse(self, status: int, message: str) -> None:
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self._last_data = self.loop.time()
        if not self._in_head:
            super().data_received(data)
            return
        # Counted by the read, so a head over the limit is cut off within one read of it
        # (httptools gathers a header whole before handing it over).
        self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.head_limit:
            self._refuse(431, f"the request head is over {self.head_limit} bytes")

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()
        if not self.parser.should_upgrade() and any(
            name in (b"content-length", b"transfer-encoding") for name, _ in self.headers
        ):
            self._reading_since = None
            self._watch_body(self.body_idle_timeout)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.cycle is not None:  # the next request on a kept-alive connection
            self._await_head()

    # -- the body -----------------------------------------------------------
    def _watch_body(self, delay: float) -> None:
        self._body_timer = self.loop.call_later(delay, self._body_check)

    def _body_check(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return  # the body is all here (or there was none)
        now = self.loop.time()
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            # We are not reading (or have not said "100 Continue"): the caller cannot
            # send, so its silence counts only from when we are seen reading again.
            self._reading_since = None
            self._watch_body(self.body_idle_timeout)
            return
        if self._reading_since is None:
            self._reading_since = now
        idle = now - max(self._last_data, self._reading_since)
        if idle >= self.body_idle_timeout:
            self.transport.close()  # seen by the app as the caller leaving
        else:
            self._watch_body(self.body_idle_timeout - idle)
