"""Data-path faults through a real platform: uploads to slow readers, callers who
leave while they wait, and which request_timeout a 504 was."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from faults_support import deploy, gauge, post, raw_socket, request_head, runs, shared

from tidal.testing import PlatformProcess, wait_for

pytestmark = pytest.mark.slow


def test_an_upload_to_a_slow_reader_arrives_whole(platform: PlatformProcess) -> None:
    deploy(platform, "faulty")
    payload = os.urandom(24 * 1024 * 1024)
    with platform.http(timeout=120) as http:
        # The runner reads 8 MiB/s: the upload takes 3 s, past the moment the gateway
        # starts watching for the caller to hang up.
        resp = http.post("/local/faulty/slow-upload", params={"mib_per_s": 8}, content=payload)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}


def test_a_caller_who_leaves_while_waiting_is_never_run(platform: PlatformProcess) -> None:
    deploy(platform, "single")  # one runner, one request at a time
    gate = shared(platform) / "single-gate"
    with platform.http() as http:
        assert http.post("/local/single/run", headers={"x-test-mark": "warm"}).status_code == 200
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(post, platform, "/local/single/run", "holder", gate="single-gate")
        wait_for(lambda: "holder" in runs(platform), what="the first request to start")
        leaver = raw_socket(platform)
        leaver.sendall(
            request_head("POST", "/local/single/run",
                         {"x-test-mark": "leaver", "content-length": 2}) + b"{}"
        )  # fmt: skip
        wait_for(lambda: gauge(platform, "tidal_requests_waiting", "single") == 1,
                 what="the second request to wait for the slot")  # fmt: skip
        leaver.close()
        # The gateway notices at once, not when the slot frees.
        wait_for(lambda: gauge(platform, "tidal_requests_waiting", "single") == 0,
                 what="the caller that left to stop waiting")  # fmt: skip
        gate.touch()
        assert holder.result(60).status_code == 200
    with platform.http() as http:
        assert http.post("/local/single/run", headers={"x-test-mark": "after"}).status_code == 200
    assert runs(platform) == ["warm", "holder", "after"]


def test_a_request_timeout_says_whether_it_waited_or_ran(platform: PlatformProcess) -> None:
    deploy(platform, "hurried")  # request_timeout=2, one runner
    deploy(platform, "never_ready")  # request_timeout=2, its runner never listens
    with platform.http() as http:
        # Its runner's start may take longer than request_timeout: first, a ready runner.
        wait_for(lambda: http.post("/local/hurried/run").status_code == 200, timeout=120,
                 what="a runner of the app to be ready")  # fmt: skip
        ran = http.post("/local/hurried/run", params={"sleep": 30})
        waited = http.post("/local/never-ready/run")
    assert ran.status_code == 504 and waited.status_code == 504
    assert ran.json()["error_type"] == waited.json()["error_type"] == "request_timeout"
    assert ran.headers["x-fal-request-timeout-type"] == "running"
    assert "did not finish within request_timeout (2s)" in ran.json()["detail"]
    assert waited.headers["x-fal-request-timeout-type"] == "waiting"
    assert "never started" in waited.json()["detail"]
