"""Proxy app mode: a tidal.App wrapping an internal server, through the CLI and gateway."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tidal.testing import PlatformProcess, wait_for

pytestmark = pytest.mark.slow

PROXY = Path(__file__).parent / "apps" / "proxy"


def runners(platform: PlatformProcess, app: str, *states: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(platform.cli("runners", "list", app, "--json").stdout)
    return [r for r in listed if not states or r["state"] in states]


@pytest.fixture(scope="module")
def proxy(platform: PlatformProcess) -> str:
    platform.cli("deploy", "app.py::Proxy", cwd=PROXY)
    return "/local/proxy"


def test_typed_endpoints(platform: PlatformProcess, proxy: str) -> None:
    with platform.http() as http:
        resp = http.post(f"{proxy}/generate", json={"prompt": "a cat", "steps": 3})
        assert resp.status_code == 200
        assert resp.json()["text"] == "generated: a cat x3"  # from the internal server
        resp = http.post(f"{proxy}/async-upper", json={"prompt": "shout"})
        assert resp.json()["text"] == "SHOUT"
        assert http.get(f"{proxy}/info").json() == {"app": "proxy"}
        assert http.get(f"{proxy}/health").json() == {"status": "ok"}


def test_invalid_input_is_422_with_pydantics_details(platform: PlatformProcess, proxy: str) -> None:
    with platform.http() as http:
        resp = http.post(f"{proxy}/generate", json={"prompt": "", "steps": 99})
    assert resp.status_code == 422
    problems = {tuple(d["loc"]): d["type"] for d in resp.json()["detail"]}
    assert problems == {
        ("body", "prompt"): "string_too_short",
        ("body", "steps"): "less_than_equal",
    }


def test_failing_endpoint_is_500_json_and_the_runner_survives(
    platform: PlatformProcess, proxy: str
) -> None:
    with platform.http() as http:
        before = http.post(f"{proxy}/generate", json={"prompt": "x"}).json()["runner"]
        resp = http.post(f"{proxy}/fail", json={"prompt": "boom"})
        assert resp.status_code == 500
        assert resp.json() == {"detail": "cannot generate 'boom'", "error_type": "ValueError"}
        after = http.post(f"{proxy}/generate", json={"prompt": "x"}).json()["runner"]
    assert after == before
    logs = platform.cli("logs", "proxy").stdout
    assert "Traceback" in logs and "ValueError: cannot generate 'boom'" in logs


def test_sse_stream_arrives_incrementally(platform: PlatformProcess, proxy: str) -> None:
    arrivals = []
    with (
        platform.http() as http,
        http.stream("POST", f"{proxy}/stream", json={"prompt": "x", "steps": 4}) as resp,
    ):
        for line in resp.iter_lines():
            if line:
                arrivals.append((time.monotonic(), json.loads(line.removeprefix("data: "))))
    assert [event for _, event in arrivals] == [{"step": i} for i in range(4)]
    assert arrivals[-1][0] - arrivals[0][0] >= 0.6  # the first came before the last was made


def test_websocket_echo(platform: PlatformProcess, proxy: str) -> None:
    async def talk() -> list[str]:
        url = platform.url.replace("http://", "ws://") + f"{proxy}/ws"
        async with connect(url) as ws:
            replies = []
            for message in ("hello", "world"):
                await ws.send(message)
                replies.append(str(await ws.recv()))
            return replies

    assert asyncio.run(talk()) == ["echo: hello", "echo: world"]


def test_openapi_is_stored_and_listed(platform: PlatformProcess, proxy: str) -> None:
    with platform.http() as http:
        doc = http.get("/api/v1/apps/proxy/openapi.json").json()
    assert set(doc["paths"]) >= {"/generate", "/async-upper", "/info", "/fail", "/stream"}
    schema = doc["components"]["schemas"]["GenerateRequest"]
    assert schema["required"] == ["prompt"]
    assert "/health" not in doc["paths"]  # the built-in probe is not part of the API
    shown = platform.cli("apps", "show", "proxy").stdout
    assert "POST /generate" in shown and "GET /info" in shown


def test_teardown_runs_on_graceful_stop(platform: PlatformProcess, proxy: str) -> None:
    with platform.http() as http:
        runner = http.post(f"{proxy}/generate", json={"prompt": "x"}).json()["runner"]
    platform.cli("runners", "stop", runner)
    log = (platform.data_dir / "logs" / "local" / "proxy" / f"{runner}.log").read_text()
    assert "teardown: stopping the internal server" in log


def test_failing_setup_fails_the_runner_and_answers_503(platform: PlatformProcess) -> None:
    platform.cli("deploy", "broken.py::Broken", cwd=PROXY)
    with platform.http() as http:
        resp = http.post("/local/broken/generate", json={})
    assert resp.status_code == 503
    assert "RuntimeError: weights not found" in resp.json()["detail"]
    failed = wait_for(lambda: runners(platform, "broken", "failed"), timeout=20)
    assert "setup() failed: RuntimeError: weights not found" in failed[0]["reason"]
    assert "weights not found" in platform.cli("logs", "broken").stdout


def test_failing_health_check_replaces_the_runner(platform: PlatformProcess) -> None:
    platform.cli("deploy", "health.py::Checked", cwd=PROXY)
    with platform.http() as http:
        assert http.get("/local/checked/health").json() == {"status": "fine"}
        first = runners(platform, "checked", "idle", "running")[0]["id"]
        http.post("/local/checked/make-sick")
        failed = wait_for(lambda: runners(platform, "checked", "failed"), timeout=30)
        assert failed[0]["id"] == first
        assert "health check /health failed 2 times in a row" in failed[0]["reason"]
        assert "HTTP 500" in failed[0]["reason"]
        http.post("/local/checked/make-well")  # served by the replacement
    assert runners(platform, "checked", "idle", "running")[0]["id"] != first
    platform.cli("apps", "delete", "checked")


def test_data_is_shared_by_runners_of_all_apps(platform: PlatformProcess) -> None:
    platform.cli("deploy", "storage.py::Writer", cwd=PROXY)
    platform.cli("deploy", "storage.py::Reader", cwd=PROXY)
    with platform.http() as http:
        wrote = http.post("/local/writer/write", json={"name": "weights.txt", "text": "w=42"})
        assert wrote.status_code == 200, wrote.text
        read = http.post("/local/reader/read", json={"name": "weights.txt"}).json()
    assert read["text"] == "w=42"
    assert read["runner"] != wrote.json()["runner"]
    # The same directory, persistent in the platform's data dir.
    assert (platform.data_dir / "data" / "weights.txt").read_text() == "w=42"
    assert wrote.json()["data_dir"] == "/data"  # the sandbox binds it there
