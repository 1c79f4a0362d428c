"""Per-request logs inside an App runner: what the endpoint prints (stdout,
stderr, Python logging) while serving a request is also appended, with the
request's id, a timestamp and a level, to the runner's request log (JSON lines,
`$TIDAL_REQUEST_LOG`), which the platform returns in the queue's status `logs`.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import threading
import time
from typing import Any, TextIO

from tidal.runtime.middleware import HttpMiddleware

current_request: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tidal_request", default=None
)
_write_lock = threading.Lock()


class _Sink:
    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the runner

    def write(self, request_id: str, level: str, message: str) -> None:
        record = {"request_id": request_id, "timestamp": time.time(), "level": level,
                  "message": message}  # fmt: skip
        with _write_lock:
            self._file.write(json.dumps(record) + "\n")


class _Tee:
    """A stream that still writes where it did, and also records lines of a request."""

    def __init__(self, stream: TextIO, sink: _Sink, level: str) -> None:
        self._stream, self._sink, self._level = stream, sink, level
        self._partial: dict[str, str] = {}

    def write(self, text: str) -> int:
        request_id = current_request.get()
        if request_id is not None:
            buffered = self._partial.pop(request_id, "") + text
            *lines, rest = buffered.split("\n")
            for line in lines:
                if line.strip():
                    self._sink.write(request_id, self._level, line)
            if rest:
                self._partial[request_id] = rest
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Handler(logging.Handler):
    def __init__(self, sink: _Sink) -> None:
        super().__init__()
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        request_id = current_request.get()
        if request_id is not None:
            self._sink.write(request_id, record.levelname, self.format(record))


def install() -> None:
    """Start recording, if the platform gave this runner a request log."""
    path = os.environ.get("TIDAL_REQUEST_LOG")
    if not path:
        return
    sink = _Sink(path)
    sys.stdout = _Tee(sys.stdout, sink, "INFO")
    sys.stderr = _Tee(sys.stderr, sink, "ERROR")
    logging.getLogger().addHandler(_Handler(sink))


class RequestContext(HttpMiddleware):
    """ASGI middleware: the request's id (from the gateway) for everything it runs."""

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request_id = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-tidal-request-id"), None
        )
        token = current_request.set(request_id)
        try:
            await self.app(scope, receive, send)
        finally:
            current_request.reset(token)
