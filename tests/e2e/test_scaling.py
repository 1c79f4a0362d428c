"""fal's scaling options and placement, observed on real runners through the CLI."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidal.testing import PlatformProcess, start_platform, wait_for

pytestmark = pytest.mark.slow

ECHO = Path(__file__).parent / "apps" / "echo"
# Room for every app here except where a test fills it on purpose: 3 CPUs and two
# fake GPUs; BIG takes 2 CPUs, so BIG and S cannot both be BIG.
CONFIG = """
max_waiting_per_app = 6
# These tests watch runners wait for capacity; yielding has its own test.
yield_idle_floor_seconds = 600

[host]
cpus = 3.5
memory_mb = 65536
gpus = 2
gpu_model = "FAKE"

[machine_types.BIG]
cpus = 2
memory_mb = 1024

[machine_types.XS]
cpus = 0.05
memory_mb = 64

[machine_types.GPU-FAKE]
cpus = 0.05
memory_mb = 64
gpus = 1
gpu_model = "FAKE"
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data_dir = tmp_path_factory.mktemp("scaling")
    (data_dir / "tidal.toml").write_text(CONFIG)
    with start_platform(data_dir) as running:
        yield running


def deploy(platform: PlatformProcess, name: str, *extra: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        platform.cli("deploy", f"scaling.py::{name}", "--json", *extra, cwd=ECHO).stdout
    )
    return out


def runners(platform: PlatformProcess, app: str, *states: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(platform.cli("runners", "list", app, "--json").stdout)
    return [r for r in listed if not states or r["state"] in states]


def get_many(platform: PlatformProcess, path: str, n: int) -> list[httpx.Response]:
    def one(_: int) -> httpx.Response:
        with platform.http() as http:
            return http.get(path)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_burst_starts_ceil_load_over_multiplexing_runners(platform: PlatformProcess) -> None:
    deploy(platform, "burst")  # max_multiplexing=2, max_concurrency=3
    responses = get_many(platform, "/local/burst/inflight?sleep=1.5", 6)
    assert [r.status_code for r in responses] == [200] * 6  # none lost
    served_by = {r.json()["runner"] for r in responses}
    assert len(served_by) == 3  # ceil(6 / 2), within max_concurrency
    assert len(runners(platform, "burst", "idle", "running")) == 3
    assert all(r.json()["max"] <= 2 for r in responses)  # never over max_multiplexing


def test_min_concurrency_runners_are_warm_before_any_request(platform: PlatformProcess) -> None:
    deploy(platform, "warm")
    ready = wait_for(lambda: len(runners(platform, "warm", "idle", "running")) == 2, timeout=30)
    assert ready
    assert all(r["served"] == 0 for r in runners(platform, "warm", "idle", "running"))


def test_runner_hint_keeps_a_callers_requests_on_one_runner(platform: PlatformProcess) -> None:
    """fal's X-Fal-Runner-Hint: sync and queued requests with one hint go to the runner
    that served it before, while that runner has a free slot."""
    deploy(platform, "warm", "--app-name", "hinted")  # two warm runners, one slot each
    wait_for(lambda: len(runners(platform, "hinted", "idle", "running")) == 2, timeout=30)

    def who(hint: str, sleep: float = 0.0) -> str:
        with platform.http() as http:
            resp = http.get(f"/local/hinted/whoami?sleep={sleep}",
                            headers={"x-fal-runner-hint": hint})  # fmt: skip
            assert resp.status_code == 200, resp.text
            runner: str = resp.json()["runner"]
            return runner

    first = who("user-a")  # both free: the router's usual pick
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(who, "user-a", 1.5)  # holds user-a's runner
        time.sleep(0.5)
        second = who("user-b")  # so user-b lands on the other one
        assert busy.result() == first
    assert second != first
    # Without hints every one of these would go to the same (first) runner.
    for _ in range(4):
        assert (who("user-a"), who("user-b")) == (first, second)
    with platform.http() as http:
        queued = http.post("/queue/local/hinted/whoami", json={},
                           headers={"x-fal-runner-hint": "user-b"}).json()  # fmt: skip
        result = wait_for(
            lambda: (r := http.get(queued["response_url"])).status_code
            == 200 and r, timeout=30, what="the queued request",
        )  # fmt: skip
    assert result.json()["runner"] == second


def test_multiplexing_is_seen_by_the_server(platform: PlatformProcess) -> None:
    deploy(platform, "multiplexed")  # max_multiplexing=3, max_concurrency=1
    responses = get_many(platform, "/local/multiplexed/inflight?sleep=1", 3)
    assert {r.status_code for r in responses} == {200}
    assert max(r.json()["max"] for r in responses) == 3
    assert len({r.json()["runner"] for r in responses}) == 1


def test_full_queue_answers_429_with_retry_after(platform: PlatformProcess) -> None:
    # multiplexed: 1 runner x 3 slots, and at most 6 waiting (the platform's setting).
    deploy(platform, "multiplexed", "--app-name", "queued")  # its own app: no rollout
    with platform.http() as http:  # a runner up first, so 3 requests run and 6 wait
        assert http.get("/local/queued/env").status_code == 200
    responses = get_many(platform, "/local/queued/inflight?sleep=3", 12)
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 9  # 3 running + 6 waiting
    assert codes.count(429) == 3
    rejected = next(r for r in responses if r.status_code == 429)
    assert rejected.headers["retry-after"] == "1"
    assert rejected.json()["error_type"] == "queue_full"
    platform.cli("apps", "delete", "queued")


def test_fake_gpus_are_assigned_exclusively_and_a_full_host_makes_runners_wait(
    platform: PlatformProcess,
) -> None:
    deploy(platform, "gpu")  # GPU-FAKE, max_concurrency=2: both fake GPUs
    responses = get_many(platform, "/local/gpu/inflight?sleep=1.5", 2)
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["machine_type"] for r in responses} == {"GPU-FAKE"}
    assert sorted(r.json()["gpus"] for r in responses) == ["0", "1"]  # one device each
    gpus = sorted(g for r in runners(platform, "gpu", "idle", "running") for g in r["gpus"])
    assert gpus == ["0", "1"]
    # A second GPU app must wait, visibly, until a GPU is free.
    deploy(platform, "gpu", "--app-name", "gpu-second")
    with platform.http(timeout=90) as http:
        result: dict[str, Any] = {}
        waiter = threading.Thread(
            target=lambda: result.update(resp=http.get("/local/gpu-second/env"))
        )
        waiter.start()
        pending = wait_for(lambda: runners(platform, "gpu-second", "pending"), timeout=15)
        assert "needs 1 GPU(s), 0 free" in pending[0]["reason"]
        platform.cli("apps", "scale", "gpu", "--keep-alive", "0")  # frees both GPUs soon
        waiter.join(60)
    assert result["resp"].status_code == 200
    assert result["resp"].json()["CUDA_VISIBLE_DEVICES"] in {"0", "1"}
    platform.cli("apps", "delete", "gpu-second")
    platform.cli("apps", "delete", "gpu")


def test_machine_type_list_falls_back_to_the_first_that_fits(platform: PlatformProcess) -> None:
    deploy(platform, "big")  # BIG (2 CPUs) warm: 1.5 of 3.5 CPUs left, not enough for BIG
    wait_for(lambda: runners(platform, "big", "idle", "running"), timeout=30)
    deploy(platform, "fallback")  # ["BIG", "S"]
    with platform.http() as http:
        env = http.get("/local/fallback/env").json()
    assert env["TIDAL_MACHINE_TYPE"] == "S"
    platform.cli("apps", "delete", "fallback")
    platform.cli("apps", "delete", "big")


def test_unknown_machine_type_and_region_fail_the_deploy(platform: PlatformProcess) -> None:
    done = platform.cli(
        "deploy", "scaling.py::burst", "--app-name", "x", cwd=ECHO, check=False
    )  # fine
    assert done.returncode == 0
    platform.cli("apps", "delete", "x")
    bad = ECHO.parent / "bad"
    done = platform.cli("deploy", "machine_type.py::app", cwd=bad, check=False)
    assert done.returncode == 1
    assert "unknown machine type 'GPU-B200'" in done.stderr
    assert "GPU-FAKE" in done.stderr and "XS" in done.stderr  # the types that exist
    done = platform.cli("deploy", "regions.py::app", cwd=bad, check=False)
    assert done.returncode == 1
    assert "region 'local'" in done.stderr


def test_runner_not_ready_within_startup_timeout_is_replaced(platform: PlatformProcess) -> None:
    deploy(platform, "flaky_start")
    with platform.http() as http:
        first = http.get("/local/flaky-start/env")
        assert first.status_code == 503
        assert "startup_timeout (2s)" in first.json()["detail"]
        second = wait_for(
            lambda: (r := http.get("/local/flaky-start/env")).status_code == 200 and r,
            timeout=30,
            what="a replacement runner to serve",
        )
    failed = wait_for(lambda: runners(platform, "flaky-start", "failed"), timeout=20)
    assert "startup_timeout (2s)" in failed[0]["reason"]
    assert second.json()["TIDAL_RUNNER_ID"] != failed[0]["id"]


def test_new_revision_rolls_out_under_load_without_failures(platform: PlatformProcess) -> None:
    deploy(platform, "burst", "--app-name", "rolling")
    statuses: list[int] = []
    revisions: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with platform.http() as http:
            while not stop.is_set():
                resp = http.get("/local/rolling/env")
                statuses.append(resp.status_code)
                if resp.status_code == 200:
                    revisions.append(resp.json()["TIDAL_REVISION"])
                time.sleep(0.02)

    workers = [threading.Thread(target=load) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: "1" in revisions, timeout=30)
        deploy(platform, "burst", "--app-name", "rolling")  # revision 2, same code
        wait_for(lambda: revisions[-5:] == ["2"] * 5, timeout=60, what="revision 2 to serve")
        live = ("pending", "setup", "idle", "running", "draining", "terminating")
        wait_for(  # revision 1's runners have ended (not only stopped taking work)
            lambda: all(r["revision"] == 2 for r in runners(platform, "rolling", *live)),
            timeout=30,
            what="revision 1's runners to end",
        )
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    assert statuses and set(statuses) == {200}, f"{len(statuses)} requests: {set(statuses)}"
    replaced = runners(platform, "rolling", "terminated")
    assert replaced and all(r["reason"] == "replaced by revision 2" for r in replaced)


def test_restart_rolls_every_runner_ready_first(platform: PlatformProcess) -> None:
    deploy(platform, "warm", "--app-name", "restartable")  # min_concurrency=2
    before = {
        r["id"] for r in wait_for(lambda: runners(platform, "restartable", "idle", "running"))
    }
    done = platform.cli("apps", "restart", "restartable")
    assert "is rolling out" in done.stdout

    def replaced() -> bool:
        ready = runners(platform, "restartable", "idle", "running")
        return len(ready) == 2 and not {r["id"] for r in ready} & before

    wait_for(replaced, timeout=60, what="two new runners")
    wait_for(  # the old ones stop after the new ones are ready (TERMINATING, then TERMINATED)
        lambda: before <= {r["id"] for r in runners(platform, "restartable", "terminated")},
        timeout=60,
        what="the old runners to end",
    )
    platform.cli("apps", "delete", "restartable")


def test_concurrency_buffer_keeps_a_spare_runner(platform: PlatformProcess) -> None:
    deploy(platform, "buffered")  # concurrency_buffer=1
    with platform.http() as http:
        assert http.get("/local/buffered/env").status_code == 200
    # One request needs one runner; the buffer adds a warm spare on top.
    wait_for(lambda: len(runners(platform, "buffered", "idle", "running")) == 2, timeout=30)
    platform.cli("apps", "delete", "buffered")


def test_scaling_delay_holds_back_a_new_runner(platform: PlatformProcess) -> None:
    deploy(platform, "delayed")  # scaling_delay=2, max_concurrency=2
    with platform.http() as http:
        assert http.get("/local/delayed/env").status_code == 200  # from zero: no delay
    busy = threading.Thread(target=lambda: get_many(platform, "/local/delayed/inflight?sleep=5", 1))
    busy.start()
    time.sleep(0.5)
    sent = time.time()
    second = get_many(platform, "/local/delayed/inflight?sleep=0", 1)[0]
    busy.join()
    assert second.status_code == 200
    started = [r for r in runners(platform, "delayed") if r["created_at"] > sent]
    assert len(started) == 1
    # The waiting request asked for a runner only after waiting scaling_delay.
    assert started[0]["created_at"] - sent >= 2.0
    platform.cli("apps", "delete", "delayed")
