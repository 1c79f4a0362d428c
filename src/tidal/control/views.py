"""What the control API answers about apps and runners (stored and live)."""

from __future__ import annotations

import time
from typing import Any

from tidal.backends.registry import Backends
from tidal.config import PlatformConfig
from tidal.domain.app import AppRecord
from tidal.domain.runner import RUNNER_PHASE_NAMES, RUNNER_PHASES, Runner
from tidal.sandbox.status import app_sandbox, platform_sandbox
from tidal.scaling.controller import Controller
from tidal.spec import connections_note


def runner_view(r: Runner) -> dict[str, Any]:
    return {
        "id": r.id,
        "app": r.app,
        "revision": r.revision,
        "state": r.state.value,
        "reason": r.reason,
        "started_from": r.started_from,
        "ready_from": r.ready_from,
        "backend": r.backend,
        "pid": r.pid,
        "machine_type": r.machine_type,
        "gpus": list(r.gpu_ids),
        "address": f"{r.address.host}:{r.address.port}" if r.address else None,
        "isolated_network": bool(r.address and r.address.netns_pid),
        "in_flight": r.in_flight,
        "served": r.served,
        "created_at": r.created_at,
        "ready_at": r.ready_at,
        "ended_at": r.ended_at,
        "idle_seconds": round(time.monotonic() - r.idle_since, 1) if r.in_flight == 0 else 0.0,
    }


def endpoints(openapi: dict[str, Any] | None) -> list[str]:
    if not openapi:
        return []
    return [
        f"{method.upper()} {path}"
        for path, ops in openapi.get("paths", {}).items()
        for method in ops
    ]


def stored_view(record: AppRecord, base_url: str) -> dict[str, Any]:
    """The app as stored (pure; run off the event loop for a page of apps)."""
    base = base_url.rstrip("/")
    return {
        "owner": record.owner,
        "name": record.name,
        "url": f"{base}/{record.owner}/{record.name}",
        "revision": record.revision,
        "public": record.public,
        "kind": record.spec.kind,
        "entry": record.spec.entry,
        "bundle_digest": record.spec.bundle_digest,
        "options": record.options.model_dump(mode="json"),
        "scaling_overrides": record.scaling_overrides,
        "endpoints": endpoints(record.spec.openapi),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


class AppViews:
    """An app's view: as stored, plus what this platform's runners and routers say now."""

    def __init__(self, controller: Controller, config: PlatformConfig, backends: Backends) -> None:
        self.controller = controller
        self.config = config
        self.backends = backends

    def app(self, record: AppRecord, base_url: str) -> dict[str, Any]:
        return {**stored_view(record, base_url), **self.live(record)}

    def live(self, record: AppRecord) -> dict[str, Any]:
        """What this platform's runners and routers say of the app now (memory only)."""
        dep = self.controller.deployments.get((record.owner, record.name))
        live = list(dep.runners.values()) if dep else []
        notes = []
        if dep and (note := self.controller.port_note(dep)):
            notes.append(note)
        if record.scaling_overrides:
            changed = ", ".join(f"{k}={v}" for k, v in sorted(record.scaling_overrides.items()))
            notes.append(f"live scaling changes override the code's options: {changed}")
        if record.options.exposed_port is not None or record.options.affinity:
            notes.append(connections_note(record.options))
        return {
            "max_runners": self.controller.ceiling(dep) if dep else None,
            "runners": {
                phase: sum(RUNNER_PHASES.get(r.state) == phase for r in live)
                for phase in RUNNER_PHASE_NAMES
            },
            "waiting": len(dep.router.waits(time.monotonic())) if dep else 0,
            "limits": self.limits(record),
            "sandbox": app_sandbox(
                platform_sandbox(self.backends.usable, self.backends.unusable),
                record.spec.backend,
                record.options.egress,
            ),
            "notes": notes,
        }

    def limits(self, record: AppRecord) -> dict[str, Any]:
        """What bounds the app's callers: sync waiters (settable per app with `tidal
        apps scale NAME max_waiting=N`), and how long and how many queue results stay."""
        config = self.config
        return {
            "max_waiting": self.controller.max_waiting(record),
            "request_timeout": record.options.request_timeout or config.default_request_timeout,
            "queue_result_ttl_seconds": config.queue_result_ttl_seconds,
            "queue_results_per_app": config.queue_results_per_app,
        }
