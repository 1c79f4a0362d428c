"""Runners (live and recently ended, with why) and app logs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response, StreamingResponse

from tidal.control.registry import Registry
from tidal.control.views import runner_view
from tidal.observe.logs import app_log_files, follow, tail
from tidal.scaling.controller import Controller


def runners_router(
    owner: str, data_dir: Path, registry: Registry, controller: Controller
) -> APIRouter:
    api = APIRouter()

    def runners_of(name: str | None) -> list[dict[str, Any]]:
        out = []
        for (_, app), dep in controller.deployments.items():
            if name is None or app == name:
                out += [runner_view(r) for r in (*dep.runners.values(), *dep.ended)]
        return sorted(out, key=lambda v: v["created_at"])

    @api.get("/api/v1/apps/{name}/runners")
    async def app_runners(name: str) -> list[dict[str, Any]]:
        await asyncio.to_thread(registry.get, owner, name)  # 404 for an unknown app
        return runners_of(name)

    @api.get("/api/v1/runners")
    async def all_runners() -> list[dict[str, Any]]:
        return runners_of(None)

    @api.post("/api/v1/runners/{runner_id}/stop")
    async def stop_runner(runner_id: str) -> dict[str, Any]:
        runner = await controller.stop_runner(runner_id)
        if runner is None:
            raise HTTPException(404, f"no live runner {runner_id!r}; see `tidal runners list`")
        return runner_view(runner)

    @api.get("/api/v1/apps/{name}/logs")
    async def logs(
        name: str, lines: int = 100, follow_: bool = Query(False, alias="follow")
    ) -> Response:
        if not app_log_files(data_dir, owner, name):
            await asyncio.to_thread(registry.get, owner, name)  # 404: unknown app
        if follow_:
            return StreamingResponse(follow(data_dir, owner, name, lines), media_type="text/plain")
        text = "".join(
            f"[{p.stem}] {line}\n"
            for p in app_log_files(data_dir, owner, name)
            for line in tail(p, lines)
        )
        return Response(text, media_type="text/plain")

    return api
