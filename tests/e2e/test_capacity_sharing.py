"""One host shared between apps: on a 2-CPU host, two small apps' idle runners
(inside their 60 s keep_alive) yield to a request for a 2-CPU app, which then
answers within about one cold start instead of after their keep_alive."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidal.testing import PlatformProcess, start_platform, wait_for

pytestmark = pytest.mark.slow

ECHO = Path(__file__).parent / "apps" / "echo"
FLOOR = 2.0
CONFIG = f"""
yield_idle_floor_seconds = {FLOOR}

[host]
cpus = 2
memory_mb = 16384
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    data_dir = tmp_path_factory.mktemp("sharing")
    (data_dir / "tidal.toml").write_text(CONFIG)
    with start_platform(data_dir) as running:
        yield running


def runners(platform: PlatformProcess, app: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(platform.cli("runners", "list", app, "--json").stdout)
    return listed


def timed_get(platform: PlatformProcess, path: str) -> float:
    started = time.monotonic()
    with platform.http(timeout=120) as http:
        assert http.get(path).status_code == 200
    return time.monotonic() - started


def test_idle_runners_of_other_apps_yield_to_a_waiting_request(platform: PlatformProcess) -> None:
    for name in ("small-a", "small-b"):
        platform.cli("deploy", "sharing.py::small", "--app-name", name, cwd=ECHO)
    platform.cli("deploy", "sharing.py::large", "--app-name", "large", cwd=ECHO)
    cold_start = timed_get(platform, "/local/small-a/env")  # capacity free: one cold start
    timed_get(platform, "/local/small-b/env")  # now both CPUs are held by idle runners
    time.sleep(FLOOR + 0.5)  # past the idle time each runner is guaranteed

    waited = timed_get(platform, "/local/large/env")

    # Before, this waited out the small apps' keep_alive (60 s). A yield costs the
    # small runners' graceful stop on top of the large app's own cold start.
    assert waited < max(3 * cold_start, cold_start + 10), (waited, cold_start)
    for name in ("small-a", "small-b"):
        ended = wait_for(
            lambda name=name: [r for r in runners(platform, name) if r["state"] == "terminated"],
            timeout=10,
        )
        assert ended[0]["reason"] == "stopped for app large's waiting request"
    table = platform.cli("runners", "list").stdout
    assert "TERMINATED" in table and "stopped for app" in table
    assert [r["state"] for r in runners(platform, "large")] in (["idle"], ["running"])
