"""The ray backend on a real local Ray cluster of several logical nodes with
different resources; every address (Ray's and the runners') is 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidal.testing import PlatformProcess, start_platform, wait_for

ray_cluster_utils = pytest.importorskip("ray.cluster_utils")

pytestmark = [pytest.mark.slow, pytest.mark.ray]

APPS = Path(__file__).parent / "apps" / "ray_apps"

CONFIG = """
ray_runner_host = "127.0.0.1"
ray_node_dir = "{node_dir}"
max_waiting_per_app = 50

[machine_types.XS]
cpus = 1
memory_mb = 256

[machine_types.SPARE]
cpus = 1
memory_mb = 256

[machine_types.GPU-T4]
cpus = 0.5
memory_mb = 256
gpus = 1
gpu_model = "T4"
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A head node offering XS and a worker offering XS and two (logical) T4 GPUs."""
    markers = tmp_path_factory.mktemp("teardowns")
    with pytest.MonkeyPatch.context() as env:
        # Ray otherwise resolves 127.0.0.1 to the machine's external address.
        env.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        env.setenv("TIDAL_TEARDOWN_MARKER", str(markers))  # runners inherit their node's env
        made = ray_cluster_utils.Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={
                "num_cpus": 2,
                "node_ip_address": "127.0.0.1",
                "include_dashboard": False,
                "resources": {"machine:XS": 100},
                "labels": {"region": "us"},
                # A dead node is noticed in seconds, not in Ray's default 30 s.
                "_system_config": {
                    "health_check_period_ms": 1000,
                    "health_check_failure_threshold": 3,
                },
            },
        )
        try:
            made.gpu_node = made.add_node(
                num_cpus=2, num_gpus=2, node_ip_address="127.0.0.1",
                resources={"machine:XS": 100, "machine:GPU-T4": 100}, labels={"region": "eu"},
            )  # fmt: skip
            made.markers = markers
            yield made
        finally:
            made.shutdown()


@pytest.fixture(scope="module")
def platform(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    data_dir = tmp_path_factory.mktemp("ray-platform")
    config = CONFIG.format(node_dir=data_dir / "nodes")
    (data_dir / "tidal.toml").write_text(config)
    args = ["--backend", "ray", "--ray-address", cluster.address]
    with start_platform(data_dir, extra_args=args) as running:
        yield running


def deploy(platform: PlatformProcess, cls: str, name: str) -> None:
    platform.cli("deploy", f"ray_app.py::{cls}", "--app-name", name, cwd=APPS)


def runners(platform: PlatformProcess, app: str, *states: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(platform.cli("runners", "list", app, "--json").stdout)
    return [r for r in listed if not states or r["state"] in states]


def work(
    platform: PlatformProcess, app: str, sleep: float, n: int, barrier: int = 0
) -> list[httpx.Response]:
    def one(_: int) -> httpx.Response:
        with platform.http() as http:
            return http.post(f"/local/{app}/work", json={"sleep": sleep, "barrier": barrier})

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def node_of(answer: dict[str, Any]) -> str:
    """The node folder a runner's bundle was unpacked in: …/nodes/<node id[:16]>/bundles/…"""
    return str(Path(answer["cwd"]).parent.parent.name)


def test_doctor_lists_the_clusters_nodes(platform: PlatformProcess, cluster: Any) -> None:
    with platform.http() as http:
        health = http.get("/api/v1/health").json()
    nodes = health["clusters"]["ray"]["nodes"]
    assert {n["labels"].get("region") for n in nodes} == {"us", "eu"}
    out = platform.cli("doctor").stdout
    assert "ray" in out and "machine:GPU-T4" in out and "2 node(s) alive" in out


def test_gpu_runners_land_on_the_gpu_node_with_distinct_devices(
    platform: PlatformProcess, cluster: Any
) -> None:
    deploy(platform, "Gpu", "gpu")  # min_concurrency=2: two runners, one GPU each
    ready = wait_for(lambda: len(runners(platform, "gpu", "idle", "running")) == 2 and
                     runners(platform, "gpu", "idle", "running"), timeout=90, what="two GPU runners")  # fmt: skip
    assert sorted(g for r in ready for g in r["gpus"]) == ["0", "1"]
    assert {r["machine_type"] for r in ready} == {"GPU-T4"}
    assert {r["address"].split(":")[0] for r in ready} == {"127.0.0.1"}
    answers = [r.json() for r in work(platform, "gpu", 1.0, 2)]
    assert {a["runner"] for a in answers} == {r["id"] for r in ready}  # one request each
    assert sorted(a["cuda"] for a in answers) == ["0", "1"]
    gpu_node = cluster.gpu_node.node_id[:16]
    assert {node_of(a) for a in answers} == {gpu_node}
    platform.cli("apps", "delete", "gpu")
    # Stopping is graceful: each runner's teardown ran.
    wait_for(lambda: {r["id"] for r in ready} <= {p.name for p in cluster.markers.iterdir()},
             timeout=30, what="teardown of both GPU runners")  # fmt: skip


def test_burst_scales_up_across_nodes_and_back_to_zero(
    platform: PlatformProcess, cluster: Any
) -> None:
    deploy(platform, "Burst", "burst")  # XS = 1 CPU; 2 CPUs per node; keep_alive=2
    # Each request holds its runner until all four have one: a runner that is ready
    # early cannot serve two of them, however slowly the others start.
    responses = work(platform, "burst", 0.0, 4, barrier=4)
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    answers = [r.json() for r in responses]
    assert len({a["runner"] for a in answers}) == 4
    assert len({node_of(a) for a in answers}) == 2  # the burst spread over both nodes
    wait_for(lambda: not runners(platform, "burst", "pending", "setup", "idle", "running", "draining",
                                        "terminating"),
             timeout=60, what="scale back to zero")  # fmt: skip
    gone = runners(platform, "burst", "terminated")
    assert len(gone) == 4 and all("keep_alive" in r["reason"] for r in gone)
    # Each actor told the platform when its runtime listened: no timer found them.
    assert {r["ready_from"] for r in gone} == {"listening signal"}, gone
    platform.cli("apps", "delete", "burst")


def test_a_killed_node_is_replaced_and_nothing_queued_is_lost(
    platform: PlatformProcess, cluster: Any
) -> None:
    spare = cluster.add_node(
        num_cpus=2, node_ip_address="127.0.0.1", resources={"machine:SPARE": 100}
    )
    deploy(platform, "Spare", "spare")  # prefers SPARE (only that node), else XS
    first = wait_for(lambda: len(runners(platform, "spare", "idle", "running")) == 2 and
                     runners(platform, "spare", "idle", "running"), timeout=90, what="two spare runners")  # fmt: skip
    assert {r["machine_type"] for r in first} == {"SPARE"}

    statuses: list[tuple[int, str]] = []
    stop = threading.Event()

    def sync_load() -> None:
        with platform.http() as http:
            while not stop.is_set():
                try:
                    resp = http.post("/local/spare/work", json={"sleep": 0.3})
                    statuses.append((resp.status_code, resp.text))
                except httpx.HTTPError as exc:
                    statuses.append((0, repr(exc)))

    load = [threading.Thread(target=sync_load) for _ in range(2)]
    for t in load:
        t.start()
    try:
        with platform.http() as http:
            queued = []
            for _ in range(6):
                resp = http.post("/queue/local/spare/work", json={"sleep": 1.0})
                assert resp.status_code == 200, resp.text
                queued.append(resp.json())
            time.sleep(0.5)
            killed_at = time.monotonic()
            cluster.remove_node(spare, allow_graceful=False)
            # The runners of the dead node are marked gone within seconds.
            wait_for(lambda: {r["id"] for r in runners(platform, "spare", "failed")} >=
                     {r["id"] for r in first}, timeout=20, what="the dead node's runners")  # fmt: skip
            detected = time.monotonic() - killed_at
            # Replaced on the nodes still there, as XS.
            again = wait_for(lambda: len(runners(platform, "spare", "idle", "running")) == 2 and
                             runners(platform, "spare", "idle", "running"), timeout=90, what="replacements")  # fmt: skip
            assert {r["machine_type"] for r in again} == {"XS"}
            # The queue drains while sync callers keep the replacements busy.
            for item in queued:
                done = wait_for(
                    lambda item=item: (
                        s := http.get(item["status_url"].replace(platform.url, ""))
                    ).json()["status"] == "COMPLETED" and s.json(),
                    timeout=60, what=f"queued request {item['request_id']}",
                )  # fmt: skip
                result = http.get(done["response_url"].replace(platform.url, ""))
                assert result.status_code == 200, result.text
            assert not stop.is_set()
    finally:
        stop.set()
        for t in load:
            t.join(30)
    print(f"dead node's runners failed {detected:.1f}s after the kill")
    codes = {code for code, _ in statuses}
    assert codes <= {200, 502}, statuses
    assert all("runner" in text for code, text in statuses if code == 502)  # a clear message
    assert statuses[-1][0] == 200
