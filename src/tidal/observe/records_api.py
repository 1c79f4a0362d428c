"""The control API's read side of the request records: analytics, requests, errors.

Under /api/v1 (admin keys, like the rest of the control plane); the dashboard reads
these, and so can any admin client.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query

from tidal.observe.records import (
    RecordStore,
    aggregate,
    bucket_seconds_for,
    group_errors,
    traceback_of,
)
from tidal.observe.request_logs import logs_for

MAX_WINDOW = 31 * 24 * 3600.0


def records_router(store: RecordStore, owner: str, data_dir: Path) -> APIRouter:
    router = APIRouter()

    def window_of(window: float) -> tuple[float, float]:
        until = time.time()
        return until - min(max(window, 1.0), MAX_WINDOW), until

    @router.get("/api/v1/analytics/apps")
    def apps_summary(window: float = 3600) -> list[dict[str, Any]]:
        """Requests and errors per app over the window (the app list's columns)."""
        since, _ = window_of(window)
        return [
            {"owner": o, "app": a, "requests": n, "errors": e}
            for (o, a), (n, e) in sorted(store.counts(since).items())
        ]

    @router.get("/api/v1/apps/{name}/analytics")
    def app_analytics(
        name: str,
        window: float = 3600,
        endpoint: str | None = None,
        bucket: int | None = Query(None, ge=1, le=int(MAX_WINDOW)),
    ) -> dict[str, Any]:
        """Requests over time, latency and queue-wait p50/p95/p99, error rate, cold starts
        (with their breakdown), per endpoint and in total, and runner counts over time."""
        since, until = window_of(window)
        width = bucket or bucket_seconds_for(until - since)
        found = store.window(owner, name, since, until, width, endpoint)
        out = aggregate(found.points, since, until, width, found.counts, found.fraction)
        out["app"] = name
        out["endpoint"] = endpoint
        out["runners"] = store.runner_series(owner, name, since, until)
        return out

    @router.get("/api/v1/requests")
    def requests(
        app: str | None = None,
        endpoint: str | None = None,
        errors: bool = False,
        window: float = 24 * 3600,
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        since, _ = window_of(window)
        return [
            r.view()
            for r in store.recent(
                owner, app, since, errors_only=errors, limit=limit, endpoint=endpoint
            )
        ]

    @router.get("/api/v1/requests/{request_id}")
    def request(request_id: str) -> dict[str, Any]:
        """One request: its record, what it printed, and the traceback if it raised."""
        record = store.get(request_id)
        if record is None:
            raise HTTPException(404, f"no record of a request {request_id!r} (yet)")
        logs = logs_for(data_dir / "logs" / record.owner / record.app, request_id)
        return {
            **record.view(),
            "logs": logs,
            "traceback": traceback_of([line["message"] for line in logs]),
        }

    @router.get("/api/v1/errors")
    def errors(
        app: str | None = None,
        window: float = 24 * 3600,
        limit: int = Query(5000, ge=1, le=50_000),
    ) -> dict[str, Any]:
        """Recent failed requests grouped by app, error type and message."""
        since, until = window_of(window)
        failed = store.recent(owner, app, since, errors_only=True, limit=limit)
        return {"since": since, "until": until, "groups": group_errors(failed)}

    return router
