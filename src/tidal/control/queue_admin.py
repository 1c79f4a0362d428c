"""/api/v1/apps/{name}/queue: what an app's durable queue holds, and flushing it.

`GET` counts the app's requests by state, says how long the oldest has waited and
lists the first waiting ones (`tidal queue APP`); `POST .../flush` ends every waiting
request as cancelled (`tidal queue flush APP`): callers polling one get the same
answer as for a cancel, webhooks are sent, and requests already running finish.
All database work runs in threads, in batches, whatever the queue's length.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import Engine, text

from tidal.control.queue_store import COMPLETED, IN_PROGRESS, IN_QUEUE, QueuedRequest
from tidal.gateway.queue import QueueService, _record

FLUSH_BATCH = 500
FLUSHED = "the request was cancelled: its app's queue was flushed (tidal queue flush)"


def queue_summary(engine: Engine, owner: str, app: str, first: int) -> dict[str, Any]:
    """Counts by state, the oldest waiting and running times, the first `first` waiting."""
    now = time.time()
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT status, count(*) AS n, min(created_at) AS created, "
                "min(started_at) AS started FROM queue_requests "
                "WHERE owner = :o AND app = :a GROUP BY status"
            ),
            {"o": owner, "a": app},
        ).all()
        waiting = conn.execute(
            text(
                "SELECT id, method, path, priority, created_at, attempts FROM queue_requests "
                "WHERE owner = :o AND app = :a AND status = :s ORDER BY priority, seq LIMIT :n"
            ),
            {"o": owner, "a": app, "s": IN_QUEUE, "n": first},
        ).all()
    by = {r.status: r for r in rows}

    def count(status: str) -> int:
        return int(by[status].n) if status in by else 0

    queued, running = by.get(IN_QUEUE), by.get(IN_PROGRESS)
    return {
        "app": app,
        "queued": count(IN_QUEUE),
        "running": count(IN_PROGRESS),
        "completed_kept": count(COMPLETED),
        "oldest_wait_seconds": round(now - queued.created, 3) if queued else None,
        "longest_running_seconds": (
            round(now - running.started, 3) if running and running.started else None
        ),
        "waiting": [
            {
                "request_id": r.id,
                "method": r.method,
                "path": r.path or "/",
                "priority": "low" if r.priority else "normal",
                "attempts": r.attempts,
                "waited_seconds": round(now - r.created_at, 3),
            }
            for r in waiting
        ],
    }


def flush_batch(engine: Engine, owner: str, app: str) -> list[QueuedRequest]:
    """End up to FLUSH_BATCH waiting requests as cancelled; the ones this call ended."""
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                "UPDATE queue_requests SET status = :done, completed_at = :now, error = :e, "
                "error_type = 'request_cancelled' WHERE status = :s AND id IN (SELECT id FROM "
                "queue_requests WHERE owner = :o AND app = :a AND status = :s "
                "ORDER BY priority, seq LIMIT :n) RETURNING *"
            ),
            {"done": COMPLETED, "now": time.time(), "e": FLUSHED, "s": IN_QUEUE,
             "o": owner, "a": app, "n": FLUSH_BATCH},
        ).all()  # fmt: skip
    return [QueuedRequest.from_row(row) for row in rows]


def queue_admin_router(
    engine: Engine, service: QueueService, owner: str, check_app: Callable[[str], Any]
) -> APIRouter:
    """`check_app(name)` raises the registry's NotFound for an unknown app (answered 404)."""
    router = APIRouter(prefix="/api/v1/apps/{name}/queue", tags=["queue"])

    @router.get("")
    async def inspect(name: str, first: int = Query(10, ge=0, le=1000)) -> dict[str, Any]:
        """The app's queue: queued, running, kept results, oldest wait, first waiting."""
        await asyncio.to_thread(check_app, name)
        return await asyncio.to_thread(queue_summary, engine, owner, name, first)

    @router.post("/flush")
    async def flush(name: str) -> dict[str, Any]:
        """Cancel every waiting request of the app; running ones finish."""
        await asyncio.to_thread(check_app, name)
        flushed = 0
        while batch := await asyncio.to_thread(flush_batch, engine, owner, name):
            flushed += len(batch)
            service.ended(batch)  # the queue's memory lets them go too
            for item in batch:  # what QueueService.complete does for one cancel
                if item.webhook_url:
                    service.webhooks.send(item)
                if service.recorder is not None:
                    service.recorder.add(_record(item, None))
        return {"app": name, "flushed": flushed}

    return router
