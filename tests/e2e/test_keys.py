"""API keys against a real platform with `auth = true`: the bootstrap admin key, keys made
with the CLI, 401/403 where they belong, and the secret nowhere but the create answer."""

from __future__ import annotations

import inspect
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from tidal.config import PlatformConfig
from tidal.testing import PlatformProcess, start_platform

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        "auth" not in {f.name for f in fields(PlatformConfig)},
        reason="PlatformConfig has no `auth` setting yet (API keys not wired in)",
    ),
]

ECHO = Path(__file__).parent / "apps" / "echo"
ROOMY = "[host]\ncpus = 64\nmemory_mb = 131072\n"
KEY = re.compile(r"^(tk_[0-9a-f]{12}):([A-Za-z0-9_-]{32})$", re.MULTILINE)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    data_dir = tmp_path_factory.mktemp("platform")
    (data_dir / "tidal.toml").write_text("auth = true\n" + ROOMY)
    # The TOML asks for keys; `auth=True` keeps the test helper from passing --no-auth.
    auth = {"auth": True} if "auth" in inspect.signature(start_platform).parameters else {}
    with start_platform(data_dir, **auth) as running:
        yield running


def test_keys_guard_the_platform_and_never_show_their_secret(secured: PlatformProcess) -> None:
    # The bootstrap admin key: in an owner-only file; the log says where, not what.
    admin_file = secured.data_dir / "admin.key"
    assert stat.S_IMODE(os.stat(admin_file).st_mode) == 0o600
    admin = admin_file.read_text().strip()
    admin_id, admin_secret = KEY.fullmatch(admin).groups()  # type: ignore[union-attr]
    assert str(admin_file) in secured.log_path.read_text()
    as_admin = {"TIDAL_KEY": admin}

    # No key: the CLI is refused, with a hint; health stays open.
    refused = secured.cli("apps", "list", check=False, env={"TIDAL_KEY": ""})
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
    with secured.http() as http:
        assert http.get("/api/v1/health").status_code == 200

    created = secured.cli("keys", "create", "--scope", "invoke", "--name", "ci", env=as_admin)
    found = KEY.search(created.stdout)
    assert found is not None, created.stdout
    invoke = found.group(0)
    invoke_id, invoke_secret = found.groups()
    assert created.stdout.count(invoke_secret) == 1

    secured.cli("deploy", "app.py::echo", "--json", cwd=ECHO, env=as_admin)

    def get(path: str, key: str | None = None) -> tuple[int, dict[str, object]]:
        headers = {"authorization": f"Key {key}"} if key else {}
        with secured.http() as http:
            resp = http.get(path, headers=headers)
        return resp.status_code, resp.json()

    # The app is private: a key is needed, and it must be a real, live one.
    status, body = get("/local/echo/echo/hi")
    assert status == 401 and body["error_type"] == "unauthorized"
    wrong = f"{invoke_id}:{'A' if invoke_secret[0] != 'A' else 'B'}{invoke_secret[1:]}"
    assert get("/local/echo/echo/hi", wrong)[0] == 401
    assert get("/local/echo/echo/hi", "not-a-key")[0] == 401
    status, body = get("/api/v1/apps", invoke)
    assert status == 403 and body["error_type"] == "forbidden"
    assert invoke_secret not in json.dumps(body)
    assert get("/api/v1/apps", admin)[0] == 200
    status, body = get("/local/echo/echo/hi", invoke)
    assert status == 200, body
    # The platform's key does not travel on to the app's runner.
    headers = body["headers"]
    assert isinstance(headers, dict) and "authorization" not in headers

    # Listed without secrets, with the last use.
    listed = secured.cli("keys", "list", "--json", env=as_admin).stdout
    views = {v["id"]: v for v in json.loads(listed)}
    assert set(views) == {admin_id, invoke_id}
    assert views[invoke_id]["scope"] == "invoke" and views[invoke_id]["name"] == "ci"
    assert views[invoke_id]["last_used_at"] is not None
    table = secured.cli("keys", "list", env=as_admin).stdout
    for shown in (listed, table):
        assert invoke_secret not in shown and admin_secret not in shown

    # Revoked: refused at once.
    secured.cli("keys", "revoke", invoke_id, env=as_admin)
    status, body = get("/local/echo/echo/hi", invoke)
    assert status == 401 and body["error_type"] == "unauthorized"
    assert invoke_id not in secured.cli("keys", "list", "--json", env=as_admin).stdout

    # Nowhere in clear: the platform's log, the runners' logs, the database files.
    logs = secured.log_path.read_text(errors="replace")
    logs += secured.cli("logs", "echo", env=as_admin).stdout
    on_disk = b"".join(p.read_bytes() for p in secured.data_dir.glob("tidal.db*"))
    for secret in (invoke_secret, admin_secret):
        assert secret not in logs
        assert secret.encode() not in on_disk
