"""What the control API answers about apps and runners (stored and live)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
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


def _encoded(value: Any) -> bytes:
    """JSON as FastAPI's JSONResponse writes it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def listing_body(stored: list[bytes], live: list[dict[str, Any] | bytes]) -> bytes:
    """A page of the apps listing: each app's stored view (JSON, cached) joined with its
    live one (a dict, or JSON kept for an app at rest), as `{**stored, **live}` would
    encode (the two share no key)."""
    return (
        b"["
        + b",".join(
            s[:-1] + b"," + (v if isinstance(v, bytes) else _encoded(v))[1:]
            for s, v in zip(stored, live, strict=True)
        )
        + b"]"
    )


class StoredViews:
    """Each app's stored view, encoded, kept while the app's record is the same object
    (the registry's listing hands the same record while its row is unchanged): building
    and encoding 100 views was most of a page's cost. Thread-safe enough for its use:
    lookups and replacements of whole entries."""

    MAX = 20_000

    def __init__(self) -> None:
        self._views: dict[tuple[str, str], tuple[AppRecord, str, bytes]] = {}

    def encoded(self, record: AppRecord, base_url: str) -> bytes:
        key = (record.owner, record.name)
        cached = self._views.get(key)
        if cached is not None and cached[0] is record and cached[1] == base_url:
            return cached[2]
        body = _encoded(stored_view(record, base_url))
        if len(self._views) >= self.MAX:
            self._views.clear()
        self._views[key] = (record, base_url, body)
        return body


class AppViews:
    """An app's view: as stored, plus what this platform's runners and routers say now."""

    def __init__(self, controller: Controller, config: PlatformConfig, backends: Backends) -> None:
        self.controller = controller
        self.config = config
        self.backends = backends
        self.stored = StoredViews()
        self._record_parts: dict[
            tuple[str, str],
            tuple[AppRecord, dict[str, str], tuple[dict[str, Any], str, list[str]]],
        ] = {}
        self._at_rest: dict[
            tuple[str, str], tuple[AppRecord, AppRecord, dict[str, str], bytes]
        ] = {}

    def app(self, record: AppRecord, base_url: str) -> dict[str, Any]:
        return {**stored_view(record, base_url), **self.live(record)}

    def live(self, record: AppRecord, platform: dict[str, str] | None = None) -> dict[str, Any]:
        """What this platform's runners and routers say of the app now (memory only,
        cheap: a page of the listing asks it of 100 apps on the event loop). `platform`:
        the platform's sandbox, when the caller has it already."""
        controller = self.controller
        dep = controller.deployments.get((record.owner, record.name))
        runners = dict.fromkeys(RUNNER_PHASE_NAMES, 0)
        notes = []
        if dep is not None:
            for r in dep.runners.values():
                phase = RUNNER_PHASES.get(r.state)
                if phase is not None:
                    runners[phase] += 1
            if note := controller.port_note(dep):
                notes.append(note)
        if platform is None:
            platform = self.platform_sandbox()
        limits, sandbox, record_notes = self._of_record(record, platform)
        return {
            "max_runners": controller.ceiling(dep) if dep else None,
            "runners": runners,
            "waiting": len(dep.router.waits(time.monotonic())) if dep else 0,
            "limits": limits,
            "sandbox": sandbox,
            "notes": notes + record_notes,
        }

    def prepare(self, records: Sequence[AppRecord], platform: dict[str, str]) -> None:
        """Compute (in a thread) what the live views of a page will keep of each record
        seen for the first time, so that the event loop only looks it up."""
        for record in records:
            self._of_record(record, platform)

    def listed_live(self, record: AppRecord, platform: dict[str, str]) -> dict[str, Any] | bytes:
        """`live()` for a page of the listing. An app at rest (no runner, nobody waiting),
        as most of a thousand are, shows the same until its record or deployment
        changes: that view is kept, encoded, and costs the event loop a lookup."""
        key = (record.owner, record.name)
        dep = self.controller.deployments.get(key)
        if dep is None or dep.runners or dep.router.waits(0.0):
            return self.live(record, platform)
        cached = self._at_rest.get(key)
        if (
            cached is not None and cached[0] is record and cached[1] is dep.record
            and cached[2] == platform
        ):  # fmt: skip
            return cached[3]
        body = _encoded(self.live(record, platform))
        if len(self._at_rest) >= StoredViews.MAX:
            self._at_rest.clear()
        self._at_rest[key] = (record, dep.record, platform, body)
        return body

    def _of_record(
        self, record: AppRecord, platform: dict[str, str]
    ) -> tuple[dict[str, Any], str, list[str]]:
        """The live view's parts that follow from the record and the platform's sandbox
        alone, kept while both stay (the listing's records are kept objects)."""
        key = (record.owner, record.name)
        cached = self._record_parts.get(key)
        if cached is not None and cached[0] is record and cached[1] == platform:
            return cached[2]
        options = record.options
        notes = []
        if record.scaling_overrides:
            changed = ", ".join(f"{k}={v}" for k, v in sorted(record.scaling_overrides.items()))
            notes.append(f"live scaling changes override the code's options: {changed}")
        if options.exposed_port is not None or options.affinity:
            notes.append(connections_note(options))
        parts = (
            self.limits(record),
            app_sandbox(platform, record.spec.backend, options.egress),
            notes,
        )
        if len(self._record_parts) >= StoredViews.MAX:
            self._record_parts.clear()
        self._record_parts[key] = (record, platform, parts)
        return parts

    def platform_sandbox(self) -> dict[str, str]:
        return platform_sandbox(self.backends.usable, self.backends.unusable)

    def limits(self, record: AppRecord) -> dict[str, Any]:
        """What bounds the app's callers: sync waiters, and how long and how many queue
        results stay (the counts settable per app: `tidal apps scale NAME --max-waiting N
        --queue-results N`)."""
        config = self.config
        return {
            "max_waiting": self.controller.max_waiting(record),
            "request_timeout": record.options.request_timeout or config.default_request_timeout,
            "queue_result_ttl_seconds": config.queue_result_ttl_seconds,
            "queue_results_per_app": record.queue_results or config.queue_results_per_app,
        }
