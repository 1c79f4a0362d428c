"""What users are told about the sandbox: health, doctor, apps show, the dashboard."""

from __future__ import annotations

from types import SimpleNamespace

from tidal.sandbox.status import app_sandbox, platform_sandbox


def test_each_state_is_told() -> None:
    on = SimpleNamespace(sandbox=SimpleNamespace(describe=lambda: "bubblewrap 0.8.0: ..."))
    assert platform_sandbox({"local": on}, {}) == {"state": "on", "detail": "bubblewrap 0.8.0: ..."}
    off = platform_sandbox({"local": SimpleNamespace(sandbox=None)}, {})
    assert off["state"] == "off" and "unconfined" in off["detail"]
    refused = platform_sandbox({"docker": object()}, {"local": "needs bubblewrap"})
    assert refused == {"state": "unavailable", "detail": "needs bubblewrap"}
    assert platform_sandbox({"docker": object()}, {})["state"] == "unused"


def test_apps_show_says_what_confines_the_app() -> None:
    on = {"state": "on", "detail": "..."}
    assert "egress none" in app_sandbox(on, "local", "none")
    assert "egress internet" in app_sandbox(on, None, "internet")
    assert app_sandbox({"state": "off", "detail": "off (--sandbox off): x"}, "local", "none") == (
        "off (--sandbox off): x"
    )
    assert app_sandbox(on, "docker", "none").startswith("container")
    assert "ray" in app_sandbox(on, "ray", "none")
