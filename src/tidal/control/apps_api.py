"""Deployed apps: list, show, delete, restart, revisions, rollback, live scaling."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from tidal.control.deploy_api import with_environment
from tidal.control.registry import LIST_PAGE_MAX, Registry
from tidal.control.views import AppViews, endpoints, listing_body
from tidal.domain.app import AppRecord
from tidal.environments import Environments
from tidal.scaling.controller import Controller

# Apps per page of `GET /api/v1/apps` unless `?limit=` says otherwise.
LIST_PAGE_DEFAULT = 100


class AppQueue(Protocol):
    """What deleting an app asks of the queue (tidal.gateway.queue.QueueService)."""

    def stop_running(self, owner: str, app: str) -> None: ...

    async def end_app(self, owner: str, app: str) -> object: ...


class RollbackRequest(BaseModel):
    revision: int


def _after(cursor: str | None) -> tuple[str, str] | None:
    if cursor is None:
        return None
    owner, sep, name = cursor.partition("/")
    if not sep or not owner or not name:
        raise HTTPException(
            422,
            f"cursor {cursor[:200]!r} is not one this API gave: pass the X-Next-Cursor "
            "header of the previous page (OWNER/NAME of its last app), or no cursor for "
            "the first page",
        )
    return owner, name


def apps_router(
    owner: str,
    bundles: Path,
    registry: Registry,
    controller: Controller,
    queue: AppQueue,
    environments: Environments,
    views: AppViews,
) -> APIRouter:
    api = APIRouter()

    @api.get("/api/v1/apps", response_model=list[dict[str, Any]])
    async def list_apps(
        request: Request,
        limit: int = Query(LIST_PAGE_DEFAULT, ge=1, le=LIST_PAGE_MAX),
        cursor: str | None = None,
    ) -> Response:
        """A page of apps in (owner, name) order. When more may follow, the
        `X-Next-Cursor` header (and a `Link: rel="next"`) gives the next page's
        `cursor`: the last app's `owner/name`."""
        after = _after(cursor)
        base = str(request.base_url)

        def page() -> list[tuple[AppRecord, bytes]]:
            found = registry.page(after, limit)
            views.prepare(found, platform)  # the parts of a first sight, here, not on the loop
            return [(r, views.stored.encoded(r, base)) for r in found]

        # The database, the stored views and the encoding in a thread; only what the
        # runners and routers say now (memory, a few µs an app) on the event loop.
        platform = views.platform_sandbox()
        found = await asyncio.to_thread(page)
        headers: dict[str, str] = {}
        if len(found) == limit:
            last = found[-1][0]
            nxt = f"{last.owner}/{last.name}"
            url = request.url.include_query_params(cursor=nxt, limit=limit)
            headers = {"x-next-cursor": nxt, "link": f'<{url}>; rel="next"'}
        live = [views.listed_live(record, platform) for record, _ in found]
        body = await asyncio.to_thread(listing_body, [view for _, view in found], live)
        return Response(body, media_type="application/json", headers=headers)

    @api.get("/api/v1/apps/{name}/openapi.json")
    async def app_openapi(name: str) -> dict[str, Any]:
        record = await asyncio.to_thread(registry.get, owner, name)
        if record.spec.openapi is None:
            raise HTTPException(404, f"app {name!r} has no OpenAPI document")
        return record.spec.openapi

    @api.get("/api/v1/apps/{name}")
    async def show_app(name: str, request: Request) -> dict[str, Any]:
        record = await asyncio.to_thread(registry.get, owner, name)
        return views.app(record, str(request.base_url))

    @api.delete("/api/v1/apps/{name}")
    async def delete_app(name: str) -> dict[str, str]:
        await asyncio.to_thread(registry.delete, owner, name)
        # Its queue ends with it: running requests stop before its runners do, and what
        # waits completes with app_deleted once no new request can join.
        queue.stop_running(owner, name)
        await controller.remove(owner, name)
        await queue.end_app(owner, name)
        return {"deleted": name}

    @api.post("/api/v1/apps/{name}/restart")
    async def restart_app(name: str, request: Request) -> dict[str, Any]:
        """Roll every runner (e.g. to pick up changed secrets): the same code as a new
        revision, rolled out ready-first like any deploy."""
        current = await asyncio.to_thread(registry.get, owner, name)
        record = await asyncio.to_thread(registry.deploy, owner, current.spec, current.public)
        controller.apply(record)
        return views.app(record, str(request.base_url))

    @api.get("/api/v1/apps/{name}/revisions")
    async def app_revisions(name: str) -> list[dict[str, Any]]:
        """Every revision, newest first; `current` marks the one deployed."""
        current = (await asyncio.to_thread(registry.get, owner, name)).revision
        return [
            {"revision": number, "created_at": created, "current": number == current,
             "kind": spec.kind, "entry": spec.entry, "bundle_digest": spec.bundle_digest,
             "endpoints": endpoints(spec.openapi)}
            for number, created, spec in await asyncio.to_thread(registry.revisions, owner, name)
        ]  # fmt: skip

    @api.post("/api/v1/apps/{name}/rollback")
    async def rollback_app(name: str, body: RollbackRequest, request: Request) -> dict[str, Any]:
        """Deploy an earlier revision's code and options again, as a new revision (rolled
        out ready-first like any deploy); live scaling changes stay."""
        current = await asyncio.to_thread(registry.get, owner, name)
        revisions = await asyncio.to_thread(registry.revisions, owner, name)
        found = [s for n, _, s in revisions if n == body.revision]
        if not found:
            raise HTTPException(404, f"app {name!r} has no revision {body.revision}")
        spec = found[0]
        if not spec.bundle_digest or not (bundles / spec.bundle_digest).is_dir():
            raise HTTPException(
                409, f"revision {body.revision}'s code bundle is gone; deploy it again"
            )
        # Its environment may have been collected since: built again (or found).
        spec = await with_environment(environments, spec)
        record = await asyncio.to_thread(registry.deploy, owner, spec, current.public)
        controller.apply(record)
        return views.app(record, str(request.base_url))

    @api.patch("/api/v1/apps/{name}/scaling")
    async def scale_app(name: str, changes: dict[str, Any], request: Request) -> dict[str, Any]:
        record = await asyncio.to_thread(registry.scale, owner, name, changes)
        controller.apply(record)
        return views.app(record, str(request.base_url))

    return api
