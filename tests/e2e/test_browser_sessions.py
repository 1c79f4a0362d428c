"""Private apps in a browser (tidal.gateway.browser) on a platform with `auth = true`:
`tidal apps open` links and dashboard sessions give a cookie for one app, never a key;
the cookie is checked for the app, its key, its age and the request's origin."""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tidal.testing import PlatformProcess, start_platform

pytestmark = pytest.mark.slow

APPS = Path(__file__).parent / "apps"
ROOMY = "[host]\ncpus = 64\nmemory_mb = 131072\n"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    data_dir = tmp_path_factory.mktemp("platform")
    (data_dir / "tidal.toml").write_text("auth = true\n" + ROOMY)
    auth = {"auth": True} if "auth" in inspect.signature(start_platform).parameters else {}
    with start_platform(data_dir, **auth) as running:
        admin = {"TIDAL_KEY": (running.data_dir / "admin.key").read_text().strip()}
        running.cli("deploy", "app.py::echo", cwd=APPS / "echo", env=admin)
        running.cli("deploy", "app.py::comfy", cwd=APPS / "comfy", env=admin)
        yield running


def admin_env(platform: PlatformProcess) -> dict[str, str]:
    return {"TIDAL_KEY": (platform.data_dir / "admin.key").read_text().strip()}


def open_link(platform: PlatformProcess, app: str, env: dict[str, str]) -> str:
    return platform.cli("apps", "open", app, "--no-browser", env=env).stdout.strip()


@contextlib.contextmanager
def signed_in(platform: PlatformProcess, app: str, env: dict[str, str]) -> Iterator[httpx.Client]:
    """A client that opened `app` through its link, as a browser does."""
    with platform.http() as http:
        resp = http.get(open_link(platform, app, env))
        assert resp.status_code == 303, resp.text
        yield http


def test_link_gives_a_cookie_for_that_app_only(secured: PlatformProcess) -> None:
    env = admin_env(secured)
    with secured.http() as anonymous:
        refused = anonymous.get("/local/echo/echo/x")
        assert refused.status_code == 401
        assert "tidal apps open" in refused.json()["detail"]

    link = open_link(secured, "echo", env)
    assert link.startswith(f"{secured.url}/local/echo/?tidal_link=")
    assert env["TIDAL_KEY"].split(":")[1] not in link  # never the key
    with secured.http() as http:
        resp = http.get(link.replace("/?", "/echo/x?a=1&") + "&b=2")
        assert resp.status_code == 303
        assert resp.headers["location"] == "/local/echo/echo/x?a=1&b=2"
        cookie = resp.headers["set-cookie"]
        assert cookie.startswith("tidal_app=")
        for flag in ("Path=/local/echo", "HttpOnly", "SameSite=Lax"):
            assert flag in cookie
        assert env["TIDAL_KEY"].split(":")[1] not in cookie
        sid = http.cookies["tidal_app"]
        both = f"theirs=1; tidal_app={sid}"
        seen = http.get("/local/echo/echo/x", headers={"cookie": both})
        assert seen.status_code == 200
        # The runner gets the app's own cookies, never the platform's session.
        assert seen.json()["cookies"] == {"theirs": "1"}
        # Used once.
        assert http.get(link).status_code == 401
        # Valid for this app only, even when presented to another one.
        other = httpx.get(f"{secured.url}/local/comfy/", cookies={"tidal_app": sid})
        assert other.status_code == 401


def test_state_changing_requests_must_come_from_the_app_itself(secured: PlatformProcess) -> None:
    with signed_in(secured, "echo", admin_env(secured)) as http:
        host = secured.url.split("://", 1)[1]
        same = http.post("/local/echo/echo/x", content=b"ok",
                         headers={"origin": f"http://{host}", "sec-fetch-site": "same-origin"})  # fmt: skip
        assert same.status_code == 200 and same.json()["body"] == "ok"
        forged = http.post("/local/echo/echo/x", content=b"no",
                           headers={"origin": "http://evil.example"})  # fmt: skip
        assert forged.status_code == 403
        cross = http.delete("/local/echo/echo/x", headers={"sec-fetch-site": "cross-site"})
        assert cross.status_code == 403
        sid = http.cookies["tidal_app"]

    def ws(origin: str) -> dict[str, object]:
        # A session for the comfy app, then its WebSocket with that cookie.
        with signed_in(secured, "comfy", admin_env(secured)) as h:
            cookie = f"tidal_app={h.cookies['tidal_app']}"
        url = secured.url.replace("http://", "ws://") + "/local/comfy/ws?clientId=b"
        with connect(url, origin=origin, additional_headers={"cookie": cookie},  # type: ignore[arg-type]
                     open_timeout=60) as sock:  # fmt: skip
            message: dict[str, object] = json.loads(sock.recv(timeout=30))
            return message

    assert ws(f"http://{secured.url.split('://', 1)[1]}")["type"] == "status"
    with pytest.raises(InvalidStatus):
        ws("http://evil.example")
    assert sid


def test_revoking_the_key_ends_its_sessions(secured: PlatformProcess) -> None:
    env = admin_env(secured)
    created = secured.cli("keys", "create", "--scope", "admin", "--name", "b", env=env).stdout
    key = next(w for w in created.split() if w.startswith("tk_") and ":" in w)
    with signed_in(secured, "echo", {"TIDAL_KEY": key}) as http:
        assert http.get("/local/echo/echo/x").status_code == 200
        secured.cli("keys", "revoke", key.split(":")[0], env=env)
        ended = http.get("/local/echo/echo/x")
        assert ended.status_code == 401
        assert "revoked" in ended.json()["detail"]


def test_dashboard_session_opens_a_private_app(secured: PlatformProcess) -> None:
    with secured.http() as http:
        origin = {"origin": secured.url}
        resp = http.post("/dashboard/login", data={"key": admin_env(secured)["TIDAL_KEY"]},
                         headers=origin)  # fmt: skip
        assert resp.status_code == 303
        opened = http.get("/dashboard/open/local/echo")
        assert opened.status_code == 303 and opened.headers["location"] == "/local/echo/"
        assert "tidal_app=" in opened.headers["set-cookie"]
        assert http.get("/local/echo/echo/x").status_code == 200
    with secured.http() as stranger:  # not signed in to the dashboard: sent to sign in
        resp = stranger.get("/dashboard/open/local/echo")
        assert resp.status_code == 303 and resp.headers["location"] == "/dashboard/login"
