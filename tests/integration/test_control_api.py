"""The control-plane API and the gateway's own answers, with the platform in-process."""

from __future__ import annotations

import hashlib
import io
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidal.backends.local import free_port
from tidal.config import PlatformConfig
from tidal.testing import platform_in_thread, wait_for

APP_PY = b"""
import tidal

@tidal.function(exposed_port=8000, keep_alive=30)
def hello() -> None:
    import subprocess, sys
    subprocess.run([sys.executable, "-m", "http.server", "8000", "--bind", "127.0.0.1"], check=True)
"""


def bundle(files: dict[str, bytes]) -> tuple[bytes, str]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def spec(digest: str, **options: Any) -> dict[str, Any]:
    return {"spec": {"name": "hello", "entry": "app.py::hello", "kind": "function",
                     "bundle_digest": digest, "options": {"exposed_port": 8000, **options}}}  # fmt: skip


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> PlatformConfig:
    return PlatformConfig(
        auth=False,
        data_dir=tmp_path,
        database_url=database_url,  # SQLite and PostgreSQL, each test
        port=free_port(),
        bundle_limit_bytes=1024 * 1024,
        machines={"host": {"cpus": 64, "memory_mb": 65536}},
    )


@pytest.fixture
def api(config: PlatformConfig) -> Iterator[httpx.Client]:
    with platform_in_thread(config), httpx.Client(base_url=config.url, timeout=30) as client:
        yield client


def test_deploy_needs_its_bundle_first(api: httpx.Client) -> None:
    resp = api.post("/api/v1/apps", json=spec("0" * 64))
    assert resp.status_code == 400
    assert "upload the code bundle" in resp.json()["detail"]


def test_bundle_digest_and_size_are_checked(api: httpx.Client) -> None:
    data, digest = bundle({"app.py": APP_PY})
    resp = api.put(f"/api/v1/bundles/{'f' * 64}", content=data)
    assert resp.status_code == 400
    assert "does not match its digest" in resp.json()["detail"]
    big = bundle({"app.py": APP_PY, "weights.py": b"#" + bytes(2 * 1024 * 1024)})
    resp = api.put(f"/api/v1/bundles/{big[1]}", content=big[0])
    assert resp.status_code == 413
    assert "limit" in resp.json()["detail"]
    assert api.head(f"/api/v1/bundles/{digest}").status_code == 404
    assert api.put(f"/api/v1/bundles/{digest}", content=data).status_code == 200
    assert api.head(f"/api/v1/bundles/{digest}").status_code == 200


def test_deploy_validates_options_and_direct_mode(api: httpx.Client) -> None:
    data, digest = bundle({"app.py": APP_PY})
    api.put(f"/api/v1/bundles/{digest}", content=data)
    for bad, named in [
        ({"keep_alive": -1}, "keep_alive"),
        ({"exposed_port": 70000}, "exposed_port"),
        ({"exposed_port": "8000"}, "exposed_port"),
        ({"keep_alive_seconds": 30}, "keep_alive_seconds"),  # not an option of fal's
    ]:
        resp = api.post("/api/v1/apps", json=spec(digest, **bad))
        assert resp.status_code == 422, bad
        assert named in str(resp.json()["detail"]), resp.json()
    assert api.get("/api/v1/apps/hello").status_code == 404
    # A plain function (no exposed_port) is valid: it runs on a runner, called from a script.
    plain = spec(digest)
    del plain["spec"]["options"]["exposed_port"]
    resp = api.post("/api/v1/apps", json=plain)
    assert resp.status_code == 201, resp.text
    assert resp.json()["options"]["exposed_port"] is None


def test_scale_changes_live_options_and_says_so(api: httpx.Client) -> None:
    data, digest = bundle({"app.py": APP_PY})
    api.put(f"/api/v1/bundles/{digest}", content=data)
    first = api.post("/api/v1/apps", json=spec(digest))
    assert first.status_code == 201
    code_keep_alive = first.json()["options"]["keep_alive"]
    resp = api.patch("/api/v1/apps/hello/scaling", json={"exposed_port": 9000})
    assert resp.status_code == 422
    assert "cannot change on a live app" in resp.json()["detail"]
    resp = api.patch(
        "/api/v1/apps/hello/scaling", json={"min_concurrency": 5, "max_concurrency": 2}
    )
    assert resp.status_code == 422
    assert "min_concurrency (5) is greater than max_concurrency (2)" in resp.json()["detail"]
    resp = api.patch("/api/v1/apps/hello/scaling", json={"keep_alive": 5})
    assert resp.status_code == 200
    view = resp.json()
    assert view["options"]["keep_alive"] == 5
    assert any("keep_alive=5" in note for note in view["notes"])
    # A redeploy keeps the live change, and shows it.
    assert api.post("/api/v1/apps", json=spec(digest)).json()["options"]["keep_alive"] == 5
    assert api.get("/api/v1/apps/hello").json()["revision"] == 2
    # `tidal deploy --reset-scale`: the code's options again, and no note.
    reset = api.post("/api/v1/apps", json={**spec(digest), "reset_scale": True}).json()
    assert reset["options"]["keep_alive"] == code_keep_alive != 5
    assert reset["scaling_overrides"] == {}
    assert not any("live scaling changes" in note for note in reset["notes"])
    assert api.post("/api/v1/apps", json=spec(digest)).json()["options"]["keep_alive"] != 5


def test_min_concurrency_warms_a_runner_without_traffic(api: httpx.Client) -> None:
    data, digest = bundle({"app.py": APP_PY})
    api.put(f"/api/v1/bundles/{digest}", content=data)
    api.post("/api/v1/apps", json=spec(digest, min_concurrency=1))
    wait_for(lambda: api.get("/api/v1/apps/hello").json()["runners"]["ready"] == 1, timeout=30)
    assert api.get("/local/hello/").status_code == 200


def test_gateway_answers_for_unknown_paths(api: httpx.Client) -> None:
    resp = api.get("/local/missing/x")
    assert resp.status_code == 404
    assert resp.json()["error_type"] == "app_not_found"
    assert resp.headers["x-fal-error-type"] == "app_not_found"
    assert api.get("/").status_code == 404
    assert api.post("/api/v1/runners/r-nope/stop").status_code == 404
    assert api.get("/api/v1/apps/missing").status_code == 404


def test_apps_survive_a_restart_and_orphans_are_reaped(config: PlatformConfig) -> None:
    data, digest = bundle({"app.py": APP_PY})
    # A "runner" left behind by a platform that crashed: its own process group, pid file kept.
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "tidal.runtime"],
        start_new_session=True,
    )
    with platform_in_thread(config), httpx.Client(base_url=config.url) as client:
        client.put(f"/api/v1/bundles/{digest}", content=data)
        client.post("/api/v1/apps", json=spec(digest))
    (config.data_dir / "runners").mkdir(exist_ok=True)
    (config.data_dir / "runners" / "r-orphan.pid").write_text(str(orphan.pid))
    try:
        with platform_in_thread(config), httpx.Client(base_url=config.url, timeout=30) as client:
            assert [a["name"] for a in client.get("/api/v1/apps").json()] == ["hello"]
            assert client.get("/local/hello/").status_code == 200
            assert orphan.wait(10) == -signal.SIGKILL
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_database_migrations_are_recorded_once(database_url: str) -> None:
    from sqlalchemy import text

    from tidal.control.db import MIGRATIONS, open_database

    engine = open_database(database_url)
    engine2 = open_database(database_url)  # re-opening applies nothing twice
    with engine2.connect() as conn:
        versions = conn.execute(text("SELECT version FROM schema_version")).scalars().all()
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    engine.dispose()
    engine2.dispose()


def test_without_isolation_an_exposed_port_app_runs_one_runner(tmp_path: Path) -> None:
    # Sandboxed runners always have their own network namespace; isolate_network=False
    # (`--isolation off`) is for unconfined runners (`--sandbox off`) only.
    config = PlatformConfig(
        data_dir=tmp_path, port=free_port(), isolate_network=False, sandbox=False, auth=False
    )
    data, digest = bundle({"app.py": APP_PY})
    with platform_in_thread(config), httpx.Client(base_url=config.url, timeout=30) as api:
        api.put(f"/api/v1/bundles/{digest}", content=data)
        view = api.post("/api/v1/apps", json=spec(digest, max_concurrency=4)).json()
        assert view["max_runners"] == 1
        assert any("at most one runner" in note for note in view["notes"])
        assert api.get("/local/hello/").status_code == 200
        logs = api.get("/api/v1/apps/hello/logs").text
        assert "at most one runner" in logs
        runner = api.get("/api/v1/apps/hello/runners").json()[0]
        assert runner["isolated_network"] is False
