"""Inputs the control API and the queue bound: app names, analytics buckets, bundles
that unpack huge, queue bodies, webhook destinations; and what the open health check
shows to a caller without a key."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from faults_support import APPS

from tidal.testing import PlatformProcess, start_platform

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """A platform with keys on and the default bounds (no webhook allowlist)."""
    data_dir: Path = tmp_path_factory.mktemp("guarded")
    (data_dir / "tidal.toml").write_text("[host]\ncpus = 64\nmemory_mb = 131072\n")
    with start_platform(data_dir, auth=True) as running:
        yield running


def admin(platform: PlatformProcess) -> httpx.Client:
    key = (platform.data_dir / "admin.key").read_text().strip()
    return httpx.Client(base_url=platform.url, timeout=60, headers={"authorization": f"Key {key}"})


def bundle(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def upload(http: httpx.Client, data: bytes) -> tuple[httpx.Response, str]:
    digest = hashlib.sha256(data).hexdigest()
    return http.put(f"/api/v1/bundles/{digest}", content=data), digest


@pytest.mark.parametrize("name", ["a/b", "", "two\nlines", "../../..", "-dash", "x" * 64])
def test_the_api_refuses_names_the_cli_refuses(guarded: PlatformProcess, name: str) -> None:
    with admin(guarded) as http:
        code = (APPS / "faulty" / "app.py").read_bytes()
        resp, digest = upload(http, bundle({"app.py": code}))
        assert resp.status_code == 200
        spec = {"name": name, "entry": "app.py::faulty", "kind": "function",
                "options": {"exposed_port": 8000}, "bundle_digest": digest}  # fmt: skip
        deployed = http.post("/api/v1/apps", json={"spec": spec})
        assert deployed.status_code == 422, deployed.text
        assert "is not a valid app name" in deployed.json()["detail"]
        assert http.get("/api/v1/apps").json() in ([], {"apps": [], "next_cursor": None})


def test_an_absurd_analytics_bucket_is_a_422(guarded: PlatformProcess) -> None:
    with admin(guarded) as http:
        resp = http.get("/api/v1/apps/any/analytics", params={"bucket": "99999999999999999999"})
    assert resp.status_code == 422


def test_health_shows_the_data_dir_and_disk_to_admins_only(guarded: PlatformProcess) -> None:
    with httpx.Client(base_url=guarded.url) as anyone, admin(guarded) as http:
        open_view = anyone.get("/api/v1/health").json()
        admin_view = http.get("/api/v1/health").json()
    assert open_view["status"] == "ok"
    assert not {"data_dir", "disk_free_bytes", "disk_total_bytes"} & set(open_view)
    assert str(guarded.data_dir) not in str(open_view)
    assert admin_view["data_dir"] == str(guarded.data_dir)
    assert admin_view["disk_free_bytes"] > 0


def test_a_zip_bomb_is_refused_before_it_is_unpacked(guarded: PlatformProcess) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("app.py", "w") as f:
        zero = bytes(2**20)
        for _ in range(600):  # 600 MiB of zeros, about 600 KB zipped
            f.write(zero)
    data = buf.getvalue()
    with admin(guarded) as http:
        resp, digest = upload(http, data)
    print(f"zip bomb: {len(data) // 1024} KB zipped, 600 MiB unpacked: HTTP {resp.status_code}")
    assert resp.status_code == 413
    assert "bundle_unpacked_limit_bytes" in resp.json()["detail"]
    assert not (guarded.data_dir / "bundles" / digest).exists()


@pytest.fixture(scope="module")
def queued_app(guarded: PlatformProcess) -> str:
    key = (guarded.data_dir / "admin.key").read_text().strip()
    guarded.cli("deploy", "app.py::faulty", cwd=APPS / "faulty", env={"TIDAL_KEY": key})
    return "/queue/local/faulty/run"


def test_a_queue_body_over_the_limit_is_a_413(guarded: PlatformProcess, queued_app: str) -> None:
    with admin(guarded) as http:
        resp = http.post(queued_app, content=bytes(33 * 2**20))
    assert resp.status_code == 413
    assert "queue_body_limit_bytes" in resp.json()["detail"]


@pytest.mark.parametrize(
    "url",
    # Loopback only: a platform that wrongly accepted them must send nothing off this host.
    # Link-local and private networks are covered in tests/unit/gateway/test_webhook_rules.py.
    ["http://127.0.0.1:1/internal", "http://localhost:1/x", "http://[::1]:1/hook",
     "http://0.0.0.0:1/"],
)  # fmt: skip
def test_webhooks_to_the_platforms_own_networks_are_refused(
    guarded: PlatformProcess, queued_app: str, url: str
) -> None:
    with admin(guarded) as http:
        resp = http.post(queued_app, params={"fal_webhook": url}, json={})
    assert resp.status_code == 422, resp.text
    assert "webhook_allowed_hosts" in resp.json()["detail"]
