"""Secrets through the `tidal` CLI against a real platform: a runner sees them in its
environment, and the value shows nowhere else (CLI, API, logs, the database on disk)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tidal.testing import PlatformProcess, start_platform, wait_for

pytestmark = pytest.mark.slow

APP_DIR = Path(__file__).parent / "apps" / "secrets"
APP = "secrets-app"
SECRET = "s3cr3t-value"
ROTATED = "r0tated-s3cr3t"


def deploy(platform: PlatformProcess) -> dict[str, Any]:
    view: dict[str, Any] = json.loads(
        platform.cli("deploy", "app.py::secrets_app", "--json", cwd=APP_DIR).stdout
    )
    return view


def token(platform: PlatformProcess) -> dict[str, Any]:
    with platform.http() as http:
        resp = http.get(f"/local/{APP}/token")
    assert resp.status_code == 200, resp.text
    seen: dict[str, Any] = resp.json()
    return seen


def live_runners(platform: PlatformProcess) -> list[str]:
    listed = json.loads(platform.cli("runners", "list", APP, "--json").stdout)
    return [
        r["id"]
        for r in listed
        if r["state"]
        in ("failure_delay", "pending", "setup", "idle", "running", "draining", "terminating")
    ]


def everything_shown(platform: PlatformProcess) -> dict[str, str]:
    """Every place a value must not appear, by name."""
    shown = {
        "apps show --json": platform.cli("apps", "show", APP, "--json").stdout,
        "apps show": platform.cli("apps", "show", APP).stdout,
        "apps list --json": platform.cli("apps", "list", "--json").stdout,
        "secrets list --json": platform.cli("secrets", "list", "--json").stdout,
        "secrets list": platform.cli("secrets", "list").stdout,
        "runners list --json": platform.cli("runners", "list", APP, "--json").stdout,
        "logs": platform.cli("logs", APP).stdout,
        "platform log": platform.log_path.read_text(errors="replace"),
    }
    with platform.http() as http:
        for path in (
            "/api/v1/apps",
            f"/api/v1/apps/{APP}",
            f"/api/v1/apps/{APP}/runners",
            f"/api/v1/apps/{APP}/openapi.json",
            f"/api/v1/apps/{APP}/logs",
            "/api/v1/runners",
            "/api/v1/secrets",
            "/api/v1/health",
            "/api/v1/openapi.json",
        ):
            shown[f"GET {path}"] = http.get(path).text
    for path in sorted((platform.data_dir / "logs").rglob("*.log")):
        shown[f"runner log {path.name}"] = path.read_text(errors="replace")
    database = b"".join(p.read_bytes() for p in sorted(platform.data_dir.glob("tidal.db*")))
    shown["database files"] = database.decode("latin-1")
    return shown


@pytest.fixture(scope="module")
def deployed(platform: PlatformProcess) -> dict[str, Any]:
    """API_TOKEN set through the CLI, then the app deployed (nothing runs yet)."""
    done = platform.cli("secrets", "set", f"API_TOKEN={SECRET}")
    assert "API_TOKEN" in done.stdout
    assert SECRET not in done.stdout + done.stderr
    view = deploy(platform)
    assert SECRET not in json.dumps(view)
    return view


def test_a_secret_reaches_runners_and_nothing_else(
    platform: PlatformProcess, deployed: dict[str, Any]
) -> None:
    key_file = platform.data_dir / "secrets.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    listed = json.loads(platform.cli("secrets", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["API_TOKEN"]
    seen = token(platform)
    assert seen["API_TOKEN"] == SECRET  # the user's server, a child of the runner, has it
    shown = everything_shown(platform)
    assert "API_TOKEN" in shown["secrets list --json"]  # the listings were read
    assert "GET /token" in shown["logs"]  # and so were the runner's logs
    for where, text in shown.items():
        assert SECRET not in text, f"the secret's value appears in {where}"


def test_a_change_reaches_new_runners_only(
    platform: PlatformProcess, deployed: dict[str, Any], tmp_path: Path
) -> None:
    first = token(platform)
    assert first["API_TOKEN"] == SECRET
    platform.cli("secrets", "set", f"API_TOKEN={ROTATED}")
    pem = "-----BEGIN KEY-----\nline\n-----END KEY-----\n"
    (tmp_path / "key.pem").write_text(pem)
    platform.cli("secrets", "set", "PEM", "--from-file", str(tmp_path / "key.pem"))
    # A running runner keeps the environment it started with...
    again = token(platform)
    assert (again["runner"], again["API_TOKEN"], again["PEM"]) == (first["runner"], SECRET, None)
    # ...and the next one gets the new values.
    for runner_id in live_runners(platform):
        platform.cli("runners", "stop", runner_id)
    wait_for(lambda: not live_runners(platform), timeout=30, what="the runner to stop")
    fresh = token(platform)
    assert fresh["runner"] != first["runner"]
    assert (fresh["API_TOKEN"], fresh["PEM"]) == (ROTATED, pem)
    # Unset: the next runner no longer has it.
    platform.cli("secrets", "unset", "PEM")
    assert [s["name"] for s in json.loads(platform.cli("secrets", "list", "--json").stdout)] == [
        "API_TOKEN"
    ]
    for runner_id in live_runners(platform):
        platform.cli("runners", "stop", runner_id)
    wait_for(lambda: not live_runners(platform), timeout=30, what="the runner to stop")
    assert token(platform)["PEM"] is None
    for where, text in everything_shown(platform).items():
        assert ROTATED not in text and "BEGIN KEY" not in text, where


@pytest.mark.parametrize(
    ("assignment", "fix"),
    [
        ("api_token=x", "e.g. API_TOKEN"),
        ("2FA=x", "not starting with a digit"),
        ("TIDAL_TOKEN=x", "reserved for the platform"),
        ("API_TOKEN", "write NAME=VALUE"),
    ],
)
def test_bad_names_are_refused_with_the_fix(
    platform: PlatformProcess, assignment: str, fix: str
) -> None:
    done = platform.cli("secrets", "set", assignment, check=False)
    assert done.returncode == 1
    assert fix in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


def test_unset_of_an_unknown_secret(platform: PlatformProcess) -> None:
    done = platform.cli("secrets", "unset", "NEVER_SET", check=False)
    assert done.returncode == 1
    assert "no secret named 'NEVER_SET'" in done.stderr


def test_a_replaced_key_fails_loudly(tmp_path: Path) -> None:
    """Runners do not start with a secret missing or garbled: the start fails, naming the
    key file, and setting the secret again repairs it."""
    data_dir = tmp_path / "platform"
    data_dir.mkdir()
    (data_dir / "tidal.toml").write_text("[host]\ncpus = 64\nmemory_mb = 131072\n")
    key_file = data_dir / "secrets.key"
    with start_platform(data_dir) as platform:
        platform.cli("secrets", "set", f"API_TOKEN={SECRET}")
        deploy(platform)
    key_file.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode())  # replaced
    with start_platform(data_dir) as platform:
        with platform.http() as http:
            resp = http.get(f"/local/{APP}/token")
        assert resp.status_code == 503
        assert str(key_file) in resp.text and "API_TOKEN" in resp.text
        assert str(key_file) in platform.log_path.read_text()
        # Names stay listable; setting the secret again under the new key repairs it.
        assert "API_TOKEN" in platform.cli("secrets", "list").stdout
        platform.cli("secrets", "set", f"API_TOKEN={ROTATED}")

        def answers() -> bool:
            with platform.http() as http:
                return http.get(f"/local/{APP}/token").status_code == 200

        wait_for(answers, timeout=90, interval=1.0, what="a runner with the repaired secret")
        assert token(platform)["API_TOKEN"] == ROTATED


def test_a_key_file_others_can_read_stops_the_platform(tmp_path: Path) -> None:
    data_dir = tmp_path / "platform"
    data_dir.mkdir()
    key_file = data_dir / "secrets.key"
    key_file.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode())
    key_file.chmod(0o644)
    with (
        pytest.raises(AssertionError, match="the platform exited") as info,
        start_platform(data_dir),
    ):
        pass
    # The platform's one-paragraph error, as printed (maybe wrapped: compare without spaces).
    message = "".join(str(info.value).split())
    assert f"{key_file}isaccessibletogrouporothers(mode0644)" in message
    assert f"chmod600{key_file}" in message
