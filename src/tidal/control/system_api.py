"""/api/v1/health and /api/v1/machines: what this platform runs on."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request

from tidal import __version__
from tidal.backends.registry import Backends
from tidal.config import PlatformConfig
from tidal.sandbox.status import platform_sandbox
from tidal.scaling.placement import Inventory


def system_router(
    config: PlatformConfig,
    backends: Backends,
    inventory: Inventory,
    is_admin: Callable[[dict[str, Any]], bool],
) -> APIRouter:
    api = APIRouter()
    data_dir = config.data_dir

    @api.get("/api/v1/health")
    async def health(request: Request) -> dict[str, Any]:
        """Open to anyone (load balancers); the data directory and its disk only for
        an admin key (or with auth off)."""
        private: dict[str, Any] = {}
        if is_admin(dict(request.scope)):
            private = {"data_dir": str(data_dir), "disk_free_bytes": None,
                       "disk_total_bytes": None,
                       "sandbox": platform_sandbox(backends.usable, backends.unusable)}  # fmt: skip
            with contextlib.suppress(OSError):
                disk = shutil.disk_usage(data_dir)
                private["disk_free_bytes"], private["disk_total_bytes"] = disk.free, disk.total
        return {
            "status": "ok",
            "version": __version__,
            "backend": next(iter(backends.usable)),
            "backends": {
                "usable": list(backends.usable),
                "unusable": backends.unusable,
                # Which engine a backend drives (Docker's or Podman's), where it says.
                "engines": {
                    name: engine
                    for name, backend in backends.usable.items()
                    if (engine := getattr(backend, "engine", None))
                },
            },
            # Cluster backends (ray): their nodes and resources, for `tidal doctor`.
            "clusters": {
                name: await asyncio.to_thread(backend.describe)
                for name, backend in backends.usable.items()
                if hasattr(backend, "describe")
            },
            **private,
        }

    @api.get("/api/v1/machines")
    async def machines() -> dict[str, Any]:
        cpus, memory, gpus = inventory.free()
        return {
            "region": config.region,
            "host": {"cpus": inventory.host.cpus, "memory_mb": inventory.host.memory_mb,
                     "gpus": [{"id": g.id, "model": g.model} for g in inventory.host.gpus]},
            "free": {"cpus": cpus, "memory_mb": memory, "gpus": gpus},
            "machine_types": [
                {"name": t.name, "cpus": t.cpus, "memory_mb": t.memory_mb, "gpus": t.gpus,
                 "gpu_model": t.gpu_model}
                for t in inventory.catalog.values()
            ],
        }  # fmt: skip

    return api
