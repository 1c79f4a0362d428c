"""Callers that send too much or too slowly: huge heads, heads a byte at a time
(slowloris), bodies that stop arriving. The platform refuses or drops them, and
stays quick for everyone else meanwhile."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from faults_support import deploy, gauge, post, raw_socket, request_head, runs, shared

from tidal.testing import PlatformProcess, start_platform, wait_for

pytestmark = pytest.mark.slow

LIMITS = (
    "header_timeout_seconds = 2\nbody_idle_timeout_seconds = 2\n"
    "[host]\ncpus = 64\nmemory_mb = 131072\n"
)


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    data_dir: Path = tmp_path_factory.mktemp("bounded")
    (data_dir / "tidal.toml").write_text(LIMITS)
    with start_platform(data_dir) as running:
        yield running


def answer(sock: socket.socket) -> bytes:
    """Everything the platform sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def answer_of_one(sock: socket.socket) -> bytes:
    """One response with a Content-Length (the connection stays open after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the platform closed the connection after {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))  # fmt: skip
    while len(rest) < length:
        rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest


def health_latencies(platform: PlatformProcess, stop: threading.Event) -> list[float]:
    seen: list[float] = []
    with platform.http(timeout=30) as http:
        while not stop.is_set() or len(seen) < 5:
            started = time.perf_counter()
            assert http.get("/api/v1/health").status_code == 200
            seen.append(time.perf_counter() - started)
    return seen


def test_a_huge_header_is_refused_early_and_health_stays_up(bounded: PlatformProcess) -> None:
    stop = threading.Event()
    result: list[list[float]] = []
    watcher = threading.Thread(target=lambda: result.append(health_latencies(bounded, stop)))
    watcher.start()
    sent = 0
    try:
        with raw_socket(bounded) as sock:
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\nx-big: ")
            block = b"a" * 65536
            with pytest.raises(OSError):  # the platform hangs up long before 64 MiB
                for _ in range(1024):
                    sock.sendall(block)
                    sent += len(block)
            head = answer(sock)
    finally:
        stop.set()
        watcher.join()
    assert head.startswith(b"HTTP/1.1 431 "), head[:200]
    assert sent < 8 * 2**20
    latencies = sorted(result[0])
    print(f"huge header: refused after {sent // 1024} KiB sent; health p50 "
          f"{latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")  # fmt: skip


def test_slowloris_heads_are_cut_off_and_health_stays_up(bounded: PlatformProcess) -> None:
    stop = threading.Event()
    result: list[list[float]] = []
    watcher = threading.Thread(target=lambda: result.append(health_latencies(bounded, stop)))
    watcher.start()
    socks = [raw_socket(bounded) for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\n")
        answers = []
        for sock in socks:  # a header line now and then, never the end of the head
            sock.sendall(b"x-a: b\r\n")
        for sock in socks:
            answers.append(answer(sock))  # header_timeout_seconds = 2
    finally:
        stop.set()
        watcher.join()
        for sock in socks:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[:3]
    latencies = sorted(result[0])
    print(f"slowloris: 50 heads cut off; health p50 {latencies[len(latencies) // 2] * 1000:.1f}"
          f" ms, max {latencies[-1] * 1000:.1f} ms over {len(latencies)} checks")  # fmt: skip


def test_a_body_that_stops_arriving_frees_the_runner(bounded: PlatformProcess) -> None:
    deploy(bounded, "single")  # one slot
    with bounded.http() as http:
        assert http.post("/local/single/run", headers={"x-test-mark": "warm"}).status_code == 200
    with raw_socket(bounded) as sock:
        sock.sendall(
            request_head("POST", "/local/single/run", {"content-length": 2 * 10**9})
            + b"x" * 100_000
        )
        assert answer(sock) == b""  # dropped after body_idle_timeout_seconds, not held
    with bounded.http() as http:  # and its slot is free again
        assert http.post("/local/single/run", headers={"x-test-mark": "next"}).status_code == 200


def test_a_body_held_back_for_100_continue_may_wait_for_a_slot(bounded: PlatformProcess) -> None:
    deploy(bounded, "single")  # one slot
    gate = shared(bounded) / "continue-gate"
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(post, bounded, "/local/single/run", "holder", gate=gate.name)
        wait_for(lambda: "holder" in runs(bounded), what="the slot to be taken")
        body = os.urandom(100_000)
        with raw_socket(bounded) as sock:
            sock.sendall(
                request_head("POST", "/local/single/slow-upload",
                             {"content-length": len(body), "expect": "100-continue"})
            )  # fmt: skip
            wait_for(lambda: gauge(bounded, "tidal_requests_waiting", "single") == 1,
                     what="the upload to wait for the slot")  # fmt: skip
            # Longer than body_idle_timeout_seconds: the caller may not send before
            # it hears "100 Continue", so this silence is not an idle body.
            time.sleep(3)
            gate.touch()
            assert holder.result(60).status_code == 200
            assert sock.recv(4096).startswith(b"HTTP/1.1 100 ")
            sock.sendall(body)
            reply = answer_of_one(sock)
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    assert hashlib.sha256(body).hexdigest().encode() in reply
