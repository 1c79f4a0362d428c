"""Real servers no one here wrote, from PyPI, deployed in direct server mode with the
seed's defaults (one runner, max_multiplexing=1) and driven by their own clients through
the gateway: Jupyter Server (REST, then code run over its kernel WebSocket while other
HTTP calls keep answering) and Gradio (gradio_client's queue and SSE, and the page in
headless Chromium through a private app and a browser session)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tidal.dashboard.app import assets_missing
from tidal.testing import PlatformProcess, start_platform

pytestmark = pytest.mark.slow

APP = Path(__file__).parent / "apps" / "pypi_servers"
ROOMY = "[host]\ncpus = 64\nmemory_mb = 131072\n"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = {"authorization": "token tidal-test"}  # Jupyter's own token, not a platform key


def execute_request(code: str, session: str) -> dict[str, Any]:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "session": session,
                   "username": "test", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }  # fmt: skip


def test_jupyter_runs_code_over_its_kernel_websocket(platform: PlatformProcess) -> None:
    platform.cli("deploy", "app.py::jupyter", cwd=APP, timeout=300)
    base = "/local/jupyter"
    with platform.http(timeout=120) as http:
        started = http.post(f"{base}/api/kernels", json={"name": "python3"}, headers=TOKEN)
        assert started.status_code == 201, started.text
        kernel = started.json()["id"]
        session = uuid.uuid4().hex
        url = platform.url.replace("http://", "ws://") + (
            f"{base}/api/kernels/{kernel}/channels?session_id={session}"
        )
        with connect(url, additional_headers=TOKEN, open_timeout=120, max_size=None) as ws:
            request = execute_request("import time\ntime.sleep(1)\nprint(6 * 7)", session)
            ws.send(json.dumps(request))
            # The kernel's channel stays open; the single runner still answers HTTP.
            assert http.get(f"{base}/api/status", headers=TOKEN).status_code == 200
            listed = http.get(f"{base}/api/kernels", headers=TOKEN).json()
            assert [k["id"] for k in listed] == [kernel]
            output, reply = "", None
            while reply is None:
                message = json.loads(ws.recv(timeout=120))
                if message["parent_header"].get("msg_id") != request["header"]["msg_id"]:
                    continue
                if message["msg_type"] == "stream":
                    output += message["content"]["text"]
                elif message["msg_type"] == "execute_reply":
                    reply = message["content"]
        assert output == "42\n"
        assert reply["status"] == "ok"
        assert http.delete(f"{base}/api/kernels/{kernel}", headers=TOKEN).status_code == 204


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    data_dir = tmp_path_factory.mktemp("platform")
    (data_dir / "tidal.toml").write_text("auth = true\n" + ROOMY)
    with start_platform(data_dir, auth=True) as running:
        yield running


def test_gradio_through_its_client_and_a_browser(secured: PlatformProcess) -> None:
    from gradio_client import Client

    admin = (secured.data_dir / "admin.key").read_text().strip()
    env = {"TIDAL_KEY": admin}
    secured.cli("deploy", "app.py::gradio_ui", cwd=APP, env=env, timeout=300)
    base = f"{secured.url}/local/gradio-ui/"

    with secured.http(timeout=300) as http:  # the cold start (Gradio imports for a while)
        page = http.get("/local/gradio-ui/", headers={"authorization": f"Key {admin}"})
        assert page.status_code == 200 and "gradio" in page.text.lower()

    # Gradio's own client: its queue (POST join, SSE data) and its heartbeat stream.
    client = Client(base, headers={"authorization": f"Key {admin}"}, verbose=False)
    try:
        assert client.predict("tidal", api_name="/greet") == "Hello, tidal! (3/3)"
        job = client.submit("again", api_name="/greet")
        assert job.result(timeout=120) == "Hello, again! (3/3)"
    finally:
        client.close()

    # A browser, which cannot send the key: a one-time link, then a cookie for this app.
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("Debian's chromium is not installed (make system-deps installs it)")
    from playwright.sync_api import expect, sync_playwright

    link = secured.cli("apps", "open", "gradio-ui", "--no-browser", env=env).stdout.strip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(link)
            assert "tidal_link" not in page.url  # traded for the cookie
            page.get_by_label("name").fill("browser")
            page.get_by_role("button", name="Submit").click()
            expect(page.get_by_label("greeting")).to_have_value("Hello, browser! (3/3)")
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert cookies["tidal_app"]["httpOnly"]
            assert admin.split(":")[1] not in json.dumps(list(cookies.values()))

            # A person signed in to the dashboard opens it from the app's page instead.
            dashboard = browser.new_page()
            dashboard.set_default_timeout(120_000)
            dashboard.goto(f"{secured.url}/dashboard/login")
            dashboard.fill("#key", admin)
            dashboard.click("button[type=submit]")
            dashboard.wait_for_url("**/dashboard/")
            if assets_missing():  # the page's libraries (make assets): the route itself
                dashboard.goto(f"{secured.url}/dashboard/open/local/gradio-ui")
                ui = dashboard
            else:
                dashboard.goto(f"{secured.url}/dashboard/#/apps/gradio-ui")
                with dashboard.expect_popup() as opened:
                    dashboard.click("a.open-ui")
                ui = opened.value
            ui.get_by_label("name").fill("dashboard")
            ui.get_by_role("button", name="Submit").click()
            expect(ui.get_by_label("greeting")).to_have_value("Hello, dashboard! (3/3)")
        finally:
            browser.close()
