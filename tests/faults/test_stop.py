"""The platform stopped under queue load: a graceful stop (SIGTERM) loses and repeats
nothing; a kill (SIGKILL) loses nothing and repeats only what was in flight."""

from __future__ import annotations

import collections
import signal
from pathlib import Path

import pytest
from faults_support import deploy, runs

from tidal.testing import PlatformProcess, start_platform, wait_for

pytestmark = pytest.mark.slow

REQUESTS = 200
ROOMY = "health_check_interval_seconds = 0.5\n[host]\ncpus = 64\nmemory_mb = 131072\n"


def submit_all(platform: PlatformProcess) -> list[str]:
    with platform.http() as http:
        return [
            http.post("/queue/local/faulty/run", params={"sleep": 0.05},
                      headers={"x-test-mark": str(i)}).json()["request_id"]
            for i in range(REQUESTS)
        ]  # fmt: skip


def outcomes(platform: PlatformProcess, ids: list[str]) -> dict[str, object]:
    with platform.http() as http:
        return {
            i: http.get(f"/queue/local/faulty/requests/{i}/status").json()["status"] for i in ids
        }


def stop_mid_load(data_dir: Path, sig: signal.Signals) -> tuple[list[str], dict[str, int]]:
    """200 queued requests; `sig` once a fifth of them ran; the platform started again
    on the same data. Returns the request ids and how many times each mark ran."""
    (data_dir / "tidal.toml").write_text(ROOMY)
    with start_platform(data_dir) as first:
        deploy(first, "faulty")
        ids = submit_all(first)
        wait_for(lambda: len(runs(first)) >= REQUESTS // 5, timeout=120, what="some to run")
        first.process.send_signal(sig)
        first.process.wait(60)
    with start_platform(data_dir) as second:
        wait_for(lambda: set(outcomes(second, ids).values()) == {"COMPLETED"}, timeout=180,
                 interval=0.5, what="every request to complete")  # fmt: skip
        with second.http() as http:
            answers = [http.get(f"/queue/local/faulty/requests/{i}") for i in ids]
        marks = [a.json()["mark"] for a in answers if a.status_code == 200]
        assert marks == [str(i) for i in range(REQUESTS)], [a.text for a in answers][:5]
        return ids, collections.Counter(runs(second))


def test_a_graceful_stop_mid_load_loses_and_repeats_nothing(tmp_path: Path) -> None:
    _, ran = stop_mid_load(tmp_path, signal.SIGTERM)
    twice = [m for m, n in ran.items() if n > 1]
    print(f"SIGTERM mid-load: {REQUESTS} requests, {len(ran)} ran, 0 lost, "
          f"{len(twice)} ran twice")  # fmt: skip
    assert len(ran) == REQUESTS and twice == []


def test_a_kill_mid_load_loses_nothing_and_repeats_only_what_ran(tmp_path: Path) -> None:
    _, ran = stop_mid_load(tmp_path, signal.SIGKILL)
    twice = [m for m, n in ran.items() if n > 1]
    print(f"SIGKILL mid-load: {REQUESTS} requests, {len(ran)} ran, 0 lost, "
          f"{len(twice)} ran again (in flight at the kill)")  # fmt: skip
    # At most the slots the app had (max_concurrency=2, one request each) ran twice.
    assert len(ran) == REQUESTS and len(twice) <= 2
