"""Real web-server patterns through the gateway (docs/web-servers.md): a ComfyUI-shaped
server (a WebSocket progress channel plus `POST /prompt` from the same client) at one
runner with default options, long-lived connection slots, raw WebSocket paths, and
session affinity across two runners."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tidal.testing import PlatformProcess, wait_for

pytestmark = pytest.mark.slow

COMFY = Path(__file__).parent / "apps" / "comfy"


def deploy(platform: PlatformProcess, target: str, *extra: str) -> dict[str, Any]:
    view: dict[str, Any] = json.loads(
        platform.cli("deploy", f"app.py::{target}", "--json", *extra, cwd=COMFY).stdout
    )
    return view


def ws_url(platform: PlatformProcess, path: str) -> str:
    return platform.url.replace("http://", "ws://") + path


def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=30))
    return message


def run_prompt(
    ws: ClientConnection, http: httpx.Client, app: str, client_id: str
) -> list[dict[str, Any]]:
    """Queue a prompt as ComfyUI's client does; return its messages from the WebSocket."""
    resp = http.post(f"{app}/prompt", json={"prompt": {"3": {}}, "client_id": client_id})
    assert resp.status_code == 200, resp.text
    prompt_id = resp.json()["prompt_id"]
    return until_done(ws, {prompt_id})[prompt_id]


def until_done(ws: ClientConnection, prompt_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    seen: dict[str, list[dict[str, Any]]] = {p: [] for p in prompt_ids}
    pending = set(prompt_ids)
    while pending:
        message = receive(ws)
        prompt_id = message["data"].get("prompt_id")
        assert prompt_id in seen, f"progress of another client's prompt: {message}"
        seen[prompt_id].append(message)
        if message["type"] == "executing" and message["data"]["node"] is None:
            pending.discard(prompt_id)
    return seen


@pytest.fixture(scope="module")
def comfy(platform: PlatformProcess) -> Iterator[str]:
    deploy(platform, "comfy")
    yield "/local/comfy"


def test_comfy_pattern_at_one_runner_with_default_options(
    platform: PlatformProcess, comfy: str
) -> None:
    show = json.loads(platform.cli("apps", "show", "comfy", "--json").stdout)
    assert show["options"]["max_multiplexing"] == 1
    assert show["options"]["max_concurrency"] == 1
    assert show["options"]["long_lived"] == "separate"
    human = platform.cli("apps", "show", "comfy").stdout
    assert "long_lived" in human and "separate" in human
    assert any("do not take request slots" in note for note in show["notes"])
    # The client opens its progress channel first, then posts its work: with the
    # WebSocket holding the runner's only request slot, the POST would wait forever.
    with connect(ws_url(platform, f"{comfy}/ws?clientId=me"), open_timeout=60) as ws:
        assert receive(ws)["type"] == "status"
        with platform.http(timeout=30) as http:
            for _ in range(2):
                messages = run_prompt(ws, http, comfy, "me")
                steps = [m["data"]["value"] for m in messages if m["type"] == "progress"]
                assert steps == [1, 2, 3]
            assert http.get(f"{comfy}/").status_code == 200  # other calls answer too


def test_open_event_stream_does_not_starve_requests(platform: PlatformProcess, comfy: str) -> None:
    with platform.http(timeout=30) as http, http.stream("GET", f"{comfy}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "data: 0"
        # The stream is open on the one runner; its request slot went back at its head.
        assert http.get(f"{comfy}/", headers={"x-fal-request-timeout": "10"}).status_code == 200
        assert next(line for line in lines if line) == "data: 1"


def test_slot_mode_makes_the_websocket_hold_the_only_slot(platform: PlatformProcess) -> None:
    deploy(platform, "comfy_slots")
    app = "/local/comfy-slots"
    with platform.http(timeout=30) as http:
        assert http.get(f"{app}/").status_code == 200  # a runner is up
        with connect(ws_url(platform, f"{app}/ws?clientId=me"), open_timeout=60) as ws:
            assert receive(ws)["type"] == "status"
            # fal's counting: the open WebSocket is the runner's one request.
            resp = http.post(f"{app}/prompt", json={"client_id": "me"},
                             headers={"x-fal-request-timeout": "1"})  # fmt: skip
            assert resp.status_code == 504
        with http.stream("GET", f"{app}/events") as stream:
            lines = stream.iter_lines()  # kept: a dropped iterator closes the stream
            assert next(lines) == "data: 0"
            held = http.get(f"{app}/", headers={"x-fal-request-timeout": "1"})
            assert held.status_code == 504  # an event stream holds its slot too
        resp = http.post(f"{app}/prompt", json={"client_id": "me"})
        assert resp.status_code == 200


def test_websocket_path_is_forwarded_raw(platform: PlatformProcess, comfy: str) -> None:
    with connect(ws_url(platform, f"{comfy}/raw/a%2Fb%20c"), open_timeout=60) as ws:
        assert receive(ws) == {"raw_path": "/raw/a%2Fb%20c"}


def test_app_root_redirects_to_its_folder(platform: PlatformProcess, comfy: str) -> None:
    with platform.http() as http:
        resp = http.get(f"{comfy}?a=1&b=%20")
        assert resp.status_code == 308
        assert resp.headers["location"] == f"{comfy}/?a=1&b=%20"
        assert http.head(comfy).status_code == 308
        # fal's clients POST to the root itself: never redirected.
        assert http.post(comfy, json={}).status_code == 405  # the server's own answer
        followed = http.get(comfy, follow_redirects=True)
        assert followed.status_code == 200 and followed.text.startswith("comfy-shaped")


class Client:
    """One ComfyUI-style client: a cookie jar shared by its HTTP calls and WebSocket."""

    def __init__(self, platform: PlatformProcess, app: str, name: str) -> None:
        self.http = platform.http(timeout=30)
        self.sockets = contextlib.ExitStack()
        self.name = name
        assert self.http.get(f"{app}/").status_code == 200  # the gateway's cookie
        self.cookie = self.http.cookies["tidal_affinity"]
        self.ws = self.connect(platform, app)

    def connect(self, platform: PlatformProcess, app: str) -> ClientConnection:
        ws = self.sockets.enter_context(
            connect(ws_url(platform, f"{app}/ws?clientId={self.name}"), open_timeout=60,
                    additional_headers={"cookie": f"tidal_affinity={self.cookie}"})
        )  # fmt: skip
        status = receive(ws)
        assert status["type"] == "status"
        self.runner: str = status["runner"]
        return ws

    def close(self) -> None:
        self.sockets.close()
        self.http.close()


def test_affinity_keeps_each_clients_progress_on_its_websocket(
    platform: PlatformProcess,
) -> None:
    deploy(platform, "comfy_sticky")
    app = "/local/comfy-sticky"

    def ready() -> list[str]:
        listed = json.loads(platform.cli("runners", "list", "comfy-sticky", "--json").stdout)
        return [r["id"] for r in listed if r["state"] in ("idle", "running")]

    wait_for(lambda: len(ready()) == 2, timeout=60, what="two ready runners")
    clients = [Client(platform, app, f"client{i}") for i in range(2)]
    try:
        assert clients[0].runner != clients[1].runner  # spread, then pinned
        prompts: dict[str, set[str]] = {c.name: set() for c in clients}
        for _ in range(3):  # interleaved: without affinity half would go to the other runner
            for c in clients:
                resp = c.http.post(f"{app}/prompt", json={"client_id": c.name, "steps": 2})
                assert resp.json()["runner"] == c.runner
                prompts[c.name].add(resp.json()["prompt_id"])
        for c in clients:
            done = until_done(c.ws, prompts[c.name])
            assert all(m["runner"] == c.runner for ms in done.values() for m in ms)

        # The first client's runner goes away: its key moves to a live runner.
        gone = clients[0].runner
        platform.cli("runners", "stop", gone)
        clients[0].ws.close()
        clients[0].ws = clients[0].connect(platform, app)
        assert clients[0].runner != gone
        resp = clients[0].http.post(f"{app}/prompt", json={"client_id": "client0"})
        assert resp.json()["runner"] == clients[0].runner
        until_done(clients[0].ws, {resp.json()["prompt_id"]})
    finally:
        for c in clients:
            c.close()
