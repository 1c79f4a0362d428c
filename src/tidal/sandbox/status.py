"""How the platform tells users whether their runners are sandboxed (health, doctor,
`tidal apps show`, the dashboard): one short sentence per case."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OFF = (
    "off (--sandbox off): local runners run unconfined, with the platform's own rights; "
    "its keys, database and other apps are within their reach"
)


def platform_sandbox(usable: Mapping[str, Any], unusable: Mapping[str, str]) -> dict[str, str]:
    """{"state": on | off | unavailable | unused, "detail": ...} for the local backend."""
    local = usable.get("local")
    if local is not None:
        sandbox = getattr(local, "sandbox", None)
        if sandbox is None:
            return {"state": "off", "detail": OFF}
        return {"state": "on", "detail": sandbox.describe()}
    if "local" in unusable:
        return {"state": "unavailable", "detail": unusable["local"]}
    return {"state": "unused", "detail": "this platform runs no local runners"}


def app_sandbox(platform: Mapping[str, str], backend: str | None, egress: str) -> str:
    """What confines one app's runners, for `tidal apps show`."""
    if backend in (None, "local"):
        if platform.get("state") != "on":
            return platform.get("detail", "unknown")
        network = "no network" if egress == "none" else "internet through NAT, not the host"
        return f"on: its own uid, no capabilities, private mounts and PIDs; egress {egress} ({network}); machine-type cgroup limits"
    if backend == "docker":
        return "container: Docker's default capabilities, machine-type limits, only /data mounted"
    return f"the {backend} backend's own isolation (see docs/security.md)"
