"""The dashboard's server side, with the platform in-process: sign-in sessions (the key
never in a cookie or URL, CSRF header, revocation), request records behind analytics,
errors and /metrics, revisions with rollback, the Playground's upload, and the page that
says `make assets` when the front-end libraries are missing."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidal.backends.local import free_port
from tidal.config import PlatformConfig
from tidal.dashboard import app as dashboard_app
from tidal.testing import platform_in_thread, wait_for

APP_PY = b"""
import tidal

@tidal.function(exposed_port=8000, keep_alive=30)
def hello() -> None:
    import subprocess, sys
    subprocess.run([sys.executable, "-m", "http.server", "8000", "--bind", "127.0.0.1"], check=True)
"""
UI = {"x-tidal-dashboard": "1"}


def deploy(api: httpx.Client, **options: Any) -> dict[str, Any]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", APP_PY)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    api.put(f"/api/v1/bundles/{digest}", content=data).raise_for_status()
    body = {"spec": {"name": "hello", "entry": "app.py::hello", "kind": "function",
                     "bundle_digest": digest, "options": {"exposed_port": 8000, **options}}}  # fmt: skip
    resp = api.post("/api/v1/apps", json=body)
    assert resp.status_code == 201, resp.text
    view: dict[str, Any] = resp.json()
    return view


def config(tmp_path: Path, auth: bool) -> PlatformConfig:
    return PlatformConfig(
        auth=auth, data_dir=tmp_path, port=free_port(),
        machines={"host": {"cpus": 64, "memory_mb": 65536}},
    )  # fmt: skip


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[httpx.Client, str]]:
    cfg = config(tmp_path, auth=True)
    with platform_in_thread(cfg), httpx.Client(base_url=cfg.url, timeout=30) as client:
        yield client, (tmp_path / "admin.key").read_text().strip()


def sign_in(client: httpx.Client, key: str, **headers: str) -> httpx.Response:
    return client.post("/dashboard/login", data={"key": key}, headers=headers)


def test_sign_in_gives_a_session_cookie_never_the_key(secured: tuple[httpx.Client, str]) -> None:
    client, admin = secured
    secret = admin.split(":")[1]
    resp = client.get("/dashboard/")
    assert resp.status_code == 303 and resp.headers["location"] == "/dashboard/login"
    login = client.get("/dashboard/login")
    assert login.status_code == 200 and "Admin key" in login.text
    assert "frame-ancestors 'none'" in login.headers["content-security-policy"]

    # Wrong, non-admin and cross-site sign-ins are refused, and set nothing.
    wrong = sign_in(client, admin[:-1] + ("A" if admin[-1] != "A" else "B"))
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert "set-cookie" not in wrong.headers and secret not in wrong.text
    invoke = client.post("/api/v1/keys", json={"scope": "invoke"},
                         headers={"authorization": f"Key {admin}"}).json()  # fmt: skip
    refused = sign_in(client, invoke["key"])
    assert refused.status_code == 403 and "needs an admin key" in refused.text
    forged = sign_in(client, admin, origin="http://evil.example")
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    padded = client.post("/dashboard/login", data={"key": admin, "pad": "x" * 5000})
    assert padded.status_code == 413 and "set-cookie" not in padded.headers

    ok = sign_in(client, admin, origin=str(client.base_url).rstrip("/"))
    assert ok.status_code == 303 and ok.headers["location"] == "/dashboard/"
    cookie = ok.headers["set-cookie"]
    assert re.fullmatch(
        r"tidal_dashboard=[A-Za-z0-9_-]{43}; Path=/dashboard; HttpOnly; SameSite=Strict", cookie
    ), cookie
    assert secret not in cookie and admin.split(":")[0] not in cookie
    assert client.get("/dashboard/").status_code == 200

    # The session works through the dashboard only, and only with the CSRF header.
    assert client.get("/dashboard/api/v1/apps", headers=UI).status_code == 200
    assert client.get("/dashboard/api/v1/apps").status_code == 403
    assert client.get("/api/v1/apps").status_code == 401  # the cookie is not a key
    assert client.get("/dashboard/whoami", headers=UI).json()["key_id"] == admin.split(":")[0]
    with httpx.Client(base_url=client.base_url) as stranger:
        assert stranger.get("/dashboard/api/v1/apps", headers=UI).status_code == 401
        stranger.cookies.set("tidal_dashboard", "forged", path="/dashboard")
        assert stranger.get("/dashboard/api/v1/apps", headers=UI).status_code == 401

    # /metrics needs an admin key (or the metrics_open setting).
    assert client.get("/metrics").status_code == 401
    metrics = client.get("/metrics", headers={"authorization": f"Key {admin}"})
    assert metrics.status_code == 200 and "# TYPE tidal_requests_total counter" in metrics.text

    # Signing out ends the session; so does revoking the key behind it.
    out = client.post("/dashboard/logout", headers=UI)
    assert out.status_code == 200 and "Max-Age=0" in out.headers["set-cookie"]
    assert client.get("/dashboard/api/v1/apps", headers=UI).status_code == 401
    second = client.post("/api/v1/keys", json={"scope": "admin"},
                         headers={"authorization": f"Key {admin}"}).json()  # fmt: skip
    assert sign_in(client, second["key"]).status_code == 303
    assert client.get("/dashboard/api/v1/apps", headers=UI).status_code == 200
    client.delete(f"/api/v1/keys/{second['id']}", headers={"authorization": f"Key {admin}"})
    assert client.get("/dashboard/api/v1/apps", headers=UI).status_code == 401


def test_a_session_outlives_a_platform_restart(tmp_path: Path) -> None:
    cfg = config(tmp_path, auth=True)
    with platform_in_thread(cfg), httpx.Client(base_url=cfg.url, timeout=30) as client:
        admin = (tmp_path / "admin.key").read_text().strip()
        assert sign_in(client, admin).status_code == 303
        cookie = client.cookies["tidal_dashboard"]
    with platform_in_thread(cfg), httpx.Client(base_url=cfg.url, timeout=30) as client:
        client.cookies.set("tidal_dashboard", cookie, path="/dashboard")
        assert client.get("/dashboard/whoami", headers=UI).json()["key_id"] == admin.split(":")[0]
        assert client.post("/dashboard/logout", headers=UI).status_code == 200
    with platform_in_thread(cfg), httpx.Client(base_url=cfg.url, timeout=30) as client:
        client.cookies.set("tidal_dashboard", cookie, path="/dashboard")
        assert client.get("/dashboard/whoami", headers=UI).status_code == 401


@pytest.fixture
def open_platform(tmp_path: Path) -> Iterator[httpx.Client]:
    cfg = config(tmp_path, auth=False)
    with platform_in_thread(cfg), httpx.Client(base_url=cfg.url, timeout=60) as client:
        yield client


def total(metrics: str, name: str) -> float:
    return sum(float(m) for m in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", metrics, re.M))


def test_requests_are_recorded_for_analytics_errors_and_metrics(
    open_platform: httpx.Client,
) -> None:
    api = open_platform
    deploy(api)
    ids = [api.get("/local/hello/").headers["x-tidal-request-id"] for _ in range(3)]
    assert api.get("/local/hello/missing").status_code == 404
    queued = api.post("/queue/local/hello/", json={}).json()  # http.server: POST is a 501
    wait_for(
        lambda: api.get(queued["status_url"]).json()["status"] == "COMPLETED", what="the queue"
    )

    def analytics() -> dict[str, Any]:
        data: dict[str, Any] = api.get("/api/v1/apps/hello/analytics?window=600").json()
        return data

    wait_for(lambda: analytics()["totals"]["requests"] == 5, timeout=10, what="5 records")
    data = analytics()
    totals = data["totals"]
    assert totals["errors"] == 2 and totals["error_rate"] == 0.4
    assert totals["latency_ms"]["p50"] > 0 and totals["cold_starts"] == 1
    assert sum(totals["cold_start_breakdown_ms"].values()) > 0
    assert sum(b["requests"] for b in data["series"]) == 5
    assert {e["endpoint"] for e in data["endpoints"]} == {"/", "/missing"}
    assert data["runners"] and data["runners"][-1]["ready"] == 1

    first = api.get(f"/api/v1/requests/{ids[0]}").json()
    assert first["kind"] == "sync" and first["status_code"] == 200 and first["cold_start"]
    assert first["runner_id"].startswith("r-") and first["revision"] == 1
    assert api.get(f"/api/v1/requests/{ids[1]}").json()["cold_start"] is False
    queued_record = api.get(f"/api/v1/requests/{queued['request_id']}").json()
    assert queued_record["kind"] == "queue" and queued_record["status_code"] == 501

    groups = api.get("/api/v1/errors?window=600").json()["groups"]
    assert sorted((g["error_type"], g["count"]) for g in groups) == [
        ("http_404", 1),
        ("http_501", 1),
    ]
    assert api.get("/api/v1/analytics/apps").json() == [
        {"owner": "local", "app": "hello", "requests": 5, "errors": 2}
    ]

    # /metrics carries the same numbers.
    metrics = api.get("/metrics").text
    assert total(metrics, "tidal_requests_total") == 5
    assert total(metrics, "tidal_request_errors_total") == 2
    assert 'tidal_cold_start_seconds_count{owner="local",app="hello"} 1' in metrics
    assert 'tidal_runners{owner="local",app="hello",state="ready"} 1' in metrics


def test_revisions_and_rollback(open_platform: httpx.Client) -> None:
    api = open_platform
    deploy(api, keep_alive=30)
    deploy(api, keep_alive=60)
    revisions = api.get("/api/v1/apps/hello/revisions").json()
    assert [(r["revision"], r["current"]) for r in revisions] == [(2, True), (1, False)]
    rolled = api.post("/api/v1/apps/hello/rollback", json={"revision": 1})
    assert rolled.status_code == 200, rolled.text
    view = rolled.json()
    assert view["revision"] == 3 and view["options"]["keep_alive"] == 30
    assert [r["revision"] for r in api.get("/api/v1/apps/hello/revisions").json()] == [3, 2, 1]
    assert api.post("/api/v1/apps/hello/rollback", json={"revision": 9}).status_code == 404
    assert api.post("/api/v1/apps/nope/rollback", json={"revision": 1}).status_code == 404


def test_playground_uploads_land_in_the_file_store(open_platform: httpx.Client) -> None:
    api = open_platform
    assert api.post("/dashboard/upload", content=b"x").status_code == 403  # no CSRF header
    resp = api.post(
        "/dashboard/upload", content=b"\x89PNG fake",
        headers={**UI, "x-file-name": "my%20picture.png", "content-type": "image/png"},
    )  # fmt: skip
    assert resp.status_code == 201
    stored = resp.json()
    assert stored["file_name"] == "my picture.png" and stored["file_size"] == 9
    assert stored["content_type"] == "image/png"
    path = httpx.URL(stored["url"]).path
    assert api.get(path).content == b"\x89PNG fake"


def test_missing_assets_say_to_run_make_assets(
    open_platform: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert open_platform.get("/dashboard/").status_code == 200
    monkeypatch.setattr(dashboard_app, "VENDORED", ("not-built.js",))
    resp = open_platform.get("/dashboard/")
    assert resp.status_code == 503 and "make assets" in resp.text
    assert "not-built.js" in resp.text
