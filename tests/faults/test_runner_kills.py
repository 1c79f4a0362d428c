"""Runners killed at random under sync load: no request hangs past request_timeout,
and only requests a killed runner was serving fail (502)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from faults_support import deploy

from tidal.testing import PlatformProcess, wait_for

pytestmark = pytest.mark.slow

KILLS = 4
CALLERS = 6
REQUEST_TIMEOUT = 20  # the app's


def live_runner_pids(platform: PlatformProcess) -> list[int]:
    with platform.http() as http:
        runners = http.get("/api/v1/apps/killable/runners").json()
    return [r["pid"] for r in runners if r["state"] in ("idle", "running") and r["pid"]]


def test_runner_kills_under_sync_load_fail_only_what_they_were_serving(
    platform: PlatformProcess,
) -> None:
    deploy(platform, "killable")  # three runners kept, one request each at a time
    wait_for(lambda: len(live_runner_pids(platform)) == 3, timeout=120, what="three runners")
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def caller() -> None:
        # The client's timeout is past request_timeout: hitting it would be a hang.
        with platform.http(timeout=REQUEST_TIMEOUT + 30) as http:
            while not stop.is_set():
                resp = http.post("/local/killable/run", params={"sleep": 0.1})
                kind = str(resp.status_code)
                if resp.status_code >= 500:
                    kind += " " + resp.json().get("error_type", "")
                with lock:
                    outcomes[kind] += 1

    with ThreadPoolExecutor(CALLERS) as pool:
        callers = [pool.submit(caller) for _ in range(CALLERS)]
        for _ in range(KILLS):
            wait_for(lambda: len(live_runner_pids(platform)) == 3, timeout=120,
                     what="the runners to be back to three")  # fmt: skip
            time.sleep(0.5)  # load on all of them
            # The runner's process group: the runtime and the user's server in it.
            os.killpg(random.choice(live_runner_pids(platform)), signal.SIGKILL)
        stop.set()
        for done in callers:
            done.result()  # raises httpx.ReadTimeout had a request hung
    failed = sum(n for kind, n in outcomes.items() if not kind.startswith("200"))
    print(f"runner kills: {KILLS} kills under {CALLERS} callers, "
          f"{sum(outcomes.values())} requests: {dict(outcomes)}")  # fmt: skip
    assert set(outcomes) <= {"200", "502 runner_connection_error"}, outcomes
    assert failed <= KILLS  # one request in flight per runner (max_multiplexing=1)
    assert outcomes["200"] > 0
    with httpx.Client(base_url=platform.url) as http:  # and the app still serves
        assert http.post("/local/killable/run").status_code == 200
