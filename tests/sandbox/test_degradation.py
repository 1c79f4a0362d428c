"""Honest degradation: a platform that cannot build the sandbox refuses local runners
(saying why and how to go on), and `--sandbox off` is said everywhere users look."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tidal.sandbox import Sandbox, SandboxUnavailable
from tidal.testing import free_port, start_platform

pytestmark = pytest.mark.slow

ECHO = Path(__file__).parents[1] / "e2e" / "apps" / "echo"


def test_platform_refuses_local_runners_without_the_sandbox(tmp_path: Path) -> None:
    """No bubblewrap on PATH: no local backend, and with no other, no platform."""
    done = subprocess.run(
        [sys.executable, "-m", "tidal", "server", "--port", str(free_port()),
         "--data-dir", str(tmp_path), "--no-auth", "--backend", "local"],
        env={**os.environ, "PATH": str(tmp_path / "empty-bin")},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert "bubblewrap" in said and "--sandbox off" in said, said


def test_sandbox_off_is_said_at_start_in_doctor_apps_show_and_dashboard(tmp_path: Path) -> None:
    with start_platform(tmp_path, ["--sandbox", "off"]) as platform:
        started = platform.log_path.read_text()
        assert "sandbox off" in started
        with platform.http() as http:
            health = http.get("/api/v1/health").json()
            assert health["sandbox"]["state"] == "off"
            page = http.get("/dashboard/", follow_redirects=True).text
        doctor = platform.cli("doctor", "--json", check=False).stdout
        [check] = [c for c in json.loads(doctor)["checks"] if c["check"] == "sandbox"]
        assert check["status"] == "warn" and "unconfined" in check["detail"]
        platform.cli("deploy", "app.py::echo", cwd=ECHO)
        shown = platform.cli("apps", "show", "echo").stdout
        assert "sandbox: off (--sandbox off)" in shown
        if "sandbox-warning" in page:  # the dashboard's assets are built (make assets)
            assert "Runner sandbox off" in page


def test_sandbox_on_is_described(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root")
    with start_platform(tmp_path) as platform:
        with platform.http() as http:
            health = http.get("/api/v1/health").json()
        assert health["sandbox"]["state"] == "on"
        assert "a uid per app" in health["sandbox"]["detail"]
        doctor = json.loads(platform.cli("doctor", "--json", check=False).stdout)
        [check] = [c for c in doctor["checks"] if c["check"] == "sandbox"]
        assert check["status"] == "ok"


def test_check_names_the_problem_and_the_way_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxUnavailable) as raised:
        Sandbox(tmp_path).check()
    message = str(raised.value)
    assert "root" in message and "uid 1000" in message and "--sandbox off" in message
