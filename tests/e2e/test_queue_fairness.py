"""Queued requests share runners with sync callers: a steady sync load on a full app
does not starve the queue."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tidal.testing import PlatformProcess, wait_for

pytestmark = pytest.mark.slow

ECHO = Path(__file__).parent / "apps" / "echo"


def test_queue_gets_slots_while_sync_callers_keep_the_app_full(platform: PlatformProcess) -> None:
    platform.cli("deploy", "scaling.py::single", "--app-name", "fair", cwd=ECHO)  # one slot
    stop = threading.Event()
    sync_statuses: list[int] = []

    def caller() -> None:
        with platform.http() as http:
            while not stop.is_set():
                sync_statuses.append(http.post("/local/fair/work?sleep=0.05", json={}).status_code)

    callers = [threading.Thread(target=caller) for _ in range(4)]
    for thread in callers:
        thread.start()
    try:
        with platform.http() as http:
            wait_for(lambda: len(sync_statuses) >= 8, timeout=60, what="the sync load to run")
            queued = http.post("/queue/local/fair/work?sleep=0.05", json={"n": 1}).json()
            done = wait_for(
                lambda: (
                    (
                        s := http.get(
                            f"/queue/local/fair/requests/{queued['request_id']}/status"
                        ).json()
                    )["status"]
                    == "COMPLETED"
                    and s
                ),
                timeout=20,
                what="the queued request to get a slot under sync load",
            )
            assert "error" not in done or done["error"] is None
            assert not stop.is_set()  # the sync load was still running all along
    finally:
        stop.set()
        for thread in callers:
            thread.join()
    assert set(sync_statuses) == {200}
