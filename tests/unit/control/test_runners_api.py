"""The runners router alone: handed a registry and a controller (driven on a manual
clock with the in-memory backend), it lists runners by fal's states and stops one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tidal.config import PlatformConfig
from tidal.control.api import build_api
from tidal.control.db import open_database
from tidal.control.registry import Registry
from tidal.control.runners_api import runners_router
from tidal.machines import HostCapacity, MachineType
from tidal.scaling.clock import ManualClock, settle
from tidal.scaling.controller import Controller
from tidal.scaling.fakes import MemoryBackend
from tidal.scaling.placement import Inventory
from tidal.spec import AppOptions, AppSpec


def test_runners_are_listed_with_their_lifecycle_state_and_stop_on_request(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = ManualClock()
        backend = MemoryBackend(clock, cold_start=2.0)
        inventory = Inventory(
            HostCapacity(cpus=4, memory_mb=4096), {"XS": MachineType("XS", 0.5, 512)}
        )
        controller = Controller(
            PlatformConfig(data_dir=tmp_path), {"memory": backend}, inventory, backend, clock=clock
        )
        registry = Registry(open_database(tmp_path / "tidal.db"))
        spec = AppSpec(name="echo", entry="app.py::f", openapi={}, backend="memory", bundle_digest="d",
                       options=AppOptions(min_concurrency=1))  # fmt: skip
        controller.apply(registry.deploy("local", spec))
        await settle()
        api = build_api()  # its error answers: NotFound is a 404
        api.include_router(runners_router("local", tmp_path, registry, controller))
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            listed = (await http.get("/api/v1/apps/echo/runners")).json()
            assert [r["state"] for r in listed] == ["setup"]
            await clock.advance(2.5)
            listed = (await http.get("/api/v1/runners")).json()
            assert [r["state"] for r in listed] == ["idle"]
            stopped = await http.post(f"/api/v1/runners/{listed[0]['id']}/stop")
            assert stopped.json()["state"] == "terminated"
            assert stopped.json()["reason"] == "stopped by request"
            assert (await http.get("/api/v1/apps/nope/runners")).status_code == 404
        for dep in controller.deployments.values():
            assert dep.task is not None
            dep.task.cancel()
        await settle()

    asyncio.run(main())
