"""fal's queue webhooks: the outcome POSTed, signed, retried with backoff until accepted."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tidal.backends.local import free_port
from tidal.gateway.webhooks import verify
from tidal.testing import PlatformProcess, wait_for

pytestmark = pytest.mark.slow

PROXY = Path(__file__).parent / "apps" / "proxy"


@dataclass
class Receiver:
    url: str
    fail_first: dict[str, int] = field(default_factory=dict)  # path -> 500s to answer first
    calls: dict[str, list[tuple[float, dict[str, str], bytes]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    port = free_port()
    state = Receiver(f"http://127.0.0.1:{port}")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with state.lock:
                calls = state.calls.setdefault(self.path, [])
                calls.append((time.monotonic(), {k.lower(): v for k, v in self.headers.items()},
                              body))  # fmt: skip
                code = 500 if len(calls) <= state.fail_first.get(self.path, 0) else 200
            self.send_response(code)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_webhook_is_signed_and_retried_until_accepted(
    platform: PlatformProcess, receiver: Receiver
) -> None:
    platform.cli("deploy", "app.py::Proxy", cwd=PROXY)
    receiver.fail_first["/ok"] = 2
    with platform.http() as http:
        resp = http.post(
            "/queue/local/proxy/generate",
            params={"fal_webhook": f"{receiver.url}/ok"},
            json={"prompt": "a cat", "steps": 2},
        )
        assert resp.status_code == 200, resp.text
        request_id = resp.json()["request_id"]
        calls = wait_for(lambda: len(receiver.calls.get("/ok", [])) >= 3 and receiver.calls["/ok"],
                         timeout=60, what="the third webhook delivery")  # fmt: skip
        time.sleep(0.5)  # nothing more after the accepted one
        assert len(receiver.calls["/ok"]) == 3
        # Exponential backoff: about 1 s, then about 2 s.
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(calls)]
        assert 0.8 < gaps[0] < 2.5 and 1.8 < gaps[1] < 4, gaps
        _, headers, body = calls[-1]
        assert json.loads(body) == {
            "request_id": request_id, "gateway_request_id": request_id, "status": "OK",
            "payload": http.get(resp.json()["response_url"]).json(), "error": None,
        }  # fmt: skip
        assert json.loads(body)["payload"]["text"] == "generated: a cat x2"
        assert headers["x-fal-webhook-request-id"] == request_id
        assert headers["content-type"] == "application/json"
        secret_file = platform.data_dir / "webhook.secret"
        assert secret_file.stat().st_mode & 0o777 == 0o600
        secret = secret_file.read_text().strip()
        ts, signature = headers["x-tidal-webhook-timestamp"], headers["x-tidal-webhook-signature"]
        assert signature.startswith("v1=")
        assert verify(secret, ts, body, signature, max_age_s=300)
        assert not verify("wrong", ts, body, signature)
        assert not verify(secret, ts, body.replace(b"cat", b"dog"), signature)


def test_webhook_for_a_failed_request_and_the_alias(
    platform: PlatformProcess, receiver: Receiver
) -> None:
    platform.cli("deploy", "app.py::Proxy", cwd=PROXY)
    with platform.http() as http:
        resp = http.post(
            "/queue/local/proxy/generate",
            params={"webhook": f"{receiver.url}/bad"},
            json={"prompt": ""},
        )
        assert resp.status_code == 200, resp.text
        request_id = resp.json()["request_id"]
        wait_for(lambda: receiver.calls.get("/bad"), timeout=60, what="the webhook")
        _, headers, body = receiver.calls["/bad"][0]
        sent = json.loads(body)
        assert sent["request_id"] == request_id and sent["status"] == "ERROR"
        assert sent["error"] and isinstance(sent["payload"], dict)  # the 422's own body
        assert "detail" in sent["payload"]
        secret = (platform.data_dir / "webhook.secret").read_text().strip()
        assert verify(secret, headers["x-tidal-webhook-timestamp"], body,
                      headers["x-tidal-webhook-signature"])  # fmt: skip
        bad = http.post("/queue/local/proxy/generate", params={"fal_webhook": "ftp://x/"},
                        json={"prompt": "x"})  # fmt: skip
        assert bad.status_code == 422 and bad.json()["error_type"] == "invalid_webhook_url"
