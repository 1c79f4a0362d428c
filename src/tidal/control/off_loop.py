"""Database writes that a check on the request path owes (a key's last use, a session's
last visit): never on the event loop, where they would hold up every request.

`write_later` hands the write to the default thread pool when called on an event loop's
thread, and does it at once anywhere else (the CLI, tests, a worker thread): callers
need not know where they run; `on_event_loop` tells a cache whether it may read on a
miss. A failed write is logged; it is a bookkeeping write, not
something a caller waits on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("tidal.control")


def on_event_loop() -> bool:
    """Whether this thread is running an event loop (where no database work may run)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def write_later(write: Callable[[], object], what: str) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        write()
        return

    def logged() -> None:
        try:
            write()
        except Exception:
            log.exception("writing %s failed", what)

    loop.run_in_executor(None, logged)
