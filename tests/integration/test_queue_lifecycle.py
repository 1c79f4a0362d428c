"""A queue's life beside its app's, with the platform in-process on SQLite and
PostgreSQL: deleting an app ends its queue (waiting requests complete with
`app_deleted`, their webhooks sent; an app deployed later under the same name starts
empty), and finished results are pruned to a per-app cap off the hot path."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidal.backends.local import free_port
from tidal.config import PlatformConfig
from tidal.gateway import queue_memory
from tidal.testing import platform_in_thread, wait_for

# Never listens: its runner never gets ready, so what is queued for it only waits.
STUCK_PY = b"""
import time
import tidal

@tidal.function(exposed_port=8000, max_concurrency=1, startup_timeout=600)
def stuck() -> None:
    time.sleep(3600)
"""


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> PlatformConfig:
    return PlatformConfig(
        auth=False, data_dir=tmp_path, database_url=database_url, port=free_port(),
        machines={"host": {"cpus": 64, "memory_mb": 65536}},
        # Pruning passes every 2 s (a tenth of the TTL); at most 3 results per app.
        queue_result_ttl_seconds=20, queue_results_per_app=3,
        webhook_allowed_hosts=["127.0.0.1"],  # the test's own receiver
        queue_body_limit_bytes=4096,
    )  # fmt: skip


@pytest.fixture
def api(config: PlatformConfig) -> Iterator[httpx.Client]:
    with platform_in_thread(config), httpx.Client(base_url=config.url, timeout=30) as client:
        yield client


@pytest.fixture
def hooks() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def deploy_stuck(api: httpx.Client) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", STUCK_PY)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    api.put(f"/api/v1/bundles/{digest}", content=buf.getvalue()).raise_for_status()
    body = {"spec": {"name": "stuck", "entry": "app.py::stuck", "kind": "function",
                     "bundle_digest": digest, "options": {"exposed_port": 8000,
                                                          "max_concurrency": 1}}}  # fmt: skip
    resp = api.post("/api/v1/apps", json=body)
    assert resp.status_code == 201, resp.text


def submit(api: httpx.Client, webhook: str | None = None) -> dict[str, Any]:
    resp = api.post(
        "/queue/local/stuck/", json={}, params={"fal_webhook": webhook} if webhook else {}
    )
    assert resp.status_code == 200, resp.text
    queued: dict[str, Any] = resp.json()
    return queued


def status(api: httpx.Client, request_id: str) -> dict[str, Any]:
    found: dict[str, Any] = api.get(f"/queue/local/stuck/requests/{request_id}/status").json()
    return found


def test_deleting_an_app_ends_its_queue(
    api: httpx.Client, hooks: tuple[str, list[dict[str, Any]]]
) -> None:
    hook_url, received = hooks
    deploy_stuck(api)
    queued = [submit(api, hook_url if i % 2 else None) for i in range(4)]
    assert [q["queue_position"] for q in queued] == [0, 1, 2, 3]
    assert api.delete("/api/v1/apps/stuck").status_code == 200
    for q in queued:
        done = status(api, q["request_id"])
        assert done["status"] == "COMPLETED" and done["error_type"] == "app_deleted", done
        assert "was deleted" in done["error"]
        result = api.get(f"/queue/local/stuck/requests/{q['request_id']}")
        assert result.status_code == 500 and result.json()["error_type"] == "app_deleted"
    # The webhooks asked for are sent, with the error.
    wait_for(lambda: len(received) == 2, timeout=30, what="the deleted app's webhooks")
    assert {r["request_id"] for r in received} == {queued[1]["request_id"], queued[3]["request_id"]}
    assert {r["status"] for r in received} == {"ERROR"}
    # A new app of the same name starts with an empty queue.
    assert api.post("/queue/local/stuck/", json={}).status_code == 404  # not deployed now
    deploy_stuck(api)
    fresh = submit(api)
    assert fresh["queue_position"] == 0
    assert status(api, fresh["request_id"])["queue_position"] == 0


def test_finished_results_are_pruned_to_the_per_app_cap(api: httpx.Client) -> None:
    deploy_stuck(api)
    ids = [submit(api)["request_id"] for _ in range(6)]
    for request_id in ids:
        resp = api.put(f"/queue/local/stuck/requests/{request_id}/cancel")
        assert resp.status_code == 202, resp.text

    def kept() -> list[str]:
        return [
            i for i in ids if api.get(f"/queue/local/stuck/requests/{i}/status").status_code == 200
        ]

    # Off the hot path, in a later pass: the newest 3 stay, the oldest go.
    wait_for(lambda: len(kept()) == 3, timeout=30, what="the oldest results to be pruned")
    assert kept() == ids[3:]
    # An app may keep fewer (or more) than the platform's cap, shown in its limits.
    resp = api.patch("/api/v1/apps/stuck/scaling", json={"queue_results_per_app": 1})
    assert resp.status_code == 200 and resp.json()["limits"]["queue_results_per_app"] == 1
    wait_for(lambda: len(kept()) == 1, timeout=30, what="the app's own cap to be applied")
    assert kept() == ids[5:]
    bad = api.patch("/api/v1/apps/stuck/scaling", json={"queue_results_per_app": 0})
    assert bad.status_code == 422 and "queue_results_per_app must be" in bad.json()["detail"]


def test_the_fast_path_answers_as_the_router_does(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Submits, status polls (fal-client's `?logs=false` too) and results of held
    requests are answered without the API framework (tidal.gateway.queue_fast); what a
    caller sees is the router's answer: same codes, same bodies, same errors."""
    deploy_stuck(api)
    first, second = submit(api), submit(api)
    rid = second["request_id"]
    for query in ("", "?logs=false", "?logs=0", "?logs=true"):
        polled = api.get(f"/queue/local/stuck/requests/{rid}/status{query}")
        assert polled.status_code == 202, (query, polled.text)
        assert polled.json() == {"status": "IN_QUEUE", "request_id": rid,
                                 "response_url": second["response_url"],
                                 "status_url": second["status_url"],
                                 "cancel_url": second["cancel_url"],
                                 "queue_position": 1}  # fmt: skip
    # A query the fast path does not know goes to the router, which says what is wrong.
    assert api.get(f"/queue/local/stuck/requests/{rid}/status?logs=perhaps").status_code == 422
    # Another app's path, or an id no one holds: the router's 404.
    assert api.get(f"/queue/local/other/requests/{rid}/status").status_code == 404
    assert api.get(f"/queue/local/stuck/requests/{'0' * 32}/status").status_code == 404
    waiting = api.get(f"/queue/local/stuck/requests/{rid}")
    assert waiting.status_code == 400 and waiting.json() == {"detail": "the request is IN_QUEUE"}
    assert api.put(f"/queue/local/stuck/requests/{rid}/cancel").status_code == 202
    done = api.get(f"/queue/local/stuck/requests/{rid}/status?logs=false")
    assert done.status_code == 200
    assert done.json()["error_type"] == "request_cancelled" and done.json()["logs"] == []
    result = api.get(f"/queue/local/stuck/requests/{rid}")
    assert result.status_code == 400 and result.headers["x-fal-error-type"] == "request_cancelled"
    assert result.json() == {"detail": "the request was cancelled",
                             "error_type": "request_cancelled"}  # fmt: skip
    assert status(api, first["request_id"])["queue_position"] == 0
    # A result no longer in memory (only the newest are kept) reads the same from the
    # database; its status, kept without bodies, from memory still.
    monkeypatch.setattr(queue_memory, "FINISHED_KEPT", 1)
    assert api.put(f"/queue/local/stuck/requests/{first['request_id']}/cancel").status_code == 202
    for query in ("?logs=false", ""):
        again = api.get(f"/queue/local/stuck/requests/{rid}/status{query}")
        assert again.status_code == 200 and again.json() == done.json()
    assert api.get(f"/queue/local/stuck/requests/{rid}").json() == result.json()
    # Past the statuses kept too, from the database the same.
    monkeypatch.setattr(queue_memory, "STATUS_KEPT", 0)
    third = submit(api)["request_id"]
    assert api.put(f"/queue/local/stuck/requests/{third}/cancel").status_code == 202
    again = api.get(f"/queue/local/stuck/requests/{rid}/status?logs=false")
    assert again.status_code == 200 and again.json() == done.json()
    # Submits: bad webhooks and oversized bodies are refused with the router's words.
    bad = api.post("/queue/local/stuck/", json={}, params={"fal_webhook": "ftp://x"})
    assert bad.status_code == 422 and bad.json()["error_type"] == "invalid_webhook_url"
    big = api.post("/queue/local/stuck/", content=b"x" * 5000)
    assert big.status_code == 413 and big.json()["error_type"] == "payload_too_large"
    missing = api.post("/queue/local/nothing/", json={})
    assert missing.status_code == 404 and missing.json()["error_type"] == "app_not_found"
    sub = api.post("/queue/local/stuck/sub/path", json={}, params={"a": "1"})
    assert sub.status_code == 200 and sub.headers["x-fal-request-id"] == sub.json()["request_id"]


def test_a_status_stream_sends_each_change_and_ends_at_completion(api: httpx.Client) -> None:
    """`GET .../status/stream` (SSE, as fal's JS client streams it): the status as it is,
    then each change, ending with COMPLETED."""
    deploy_stuck(api)
    rid = submit(api)["request_id"]
    with api.stream("GET", f"/queue/local/stuck/requests/{rid}/status/stream") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = (json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: "))
        first = next(events)
        assert first["status"] == "IN_QUEUE" and first["queue_position"] == 0
        assert api.put(f"/queue/local/stuck/requests/{rid}/cancel").status_code == 202
        rest = list(events)  # the stream ends once the request completed
    assert rest and rest[-1]["status"] == "COMPLETED"
    assert rest[-1]["error_type"] == "request_cancelled" and rest[-1]["request_id"] == rid
    missing = api.get(f"/queue/local/stuck/requests/{'0' * 32}/status/stream")
    assert missing.status_code == 404
