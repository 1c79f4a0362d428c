"""Cold start on the ray backend against the local backend, in the same run.

One platform runs both backends (`--backend local --backend ray`, machine type RAY
mapped to ray); a local two-node Ray cluster (ray.cluster_utils, everything on
127.0.0.1) hosts the ray runners. Each trial stops the app's runners, waits until
none is left, then times one request from send to response: placement (the actor's
worker process), the bundle from Ray's object store, the runtime's start, the
readiness probe and the request. Trials alternate between the two apps.

    .venv/bin/python bench/ray_cold_start.py [--trials N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from tidal.testing import PlatformProcess, start_platform, wait_for

APP_PY = """\
import tidal


class Cold(tidal.App, keep_alive=300, max_concurrency=1):
    machine_type = "XS"

    @tidal.endpoint("/ping")
    def ping(self) -> dict[str, str]:
        return {"ok": "yes"}


class ColdRay(Cold, keep_alive=300, max_concurrency=1):
    machine_type = "RAY"
"""

CONFIG = """
ray_runner_host = "127.0.0.1"
ray_node_dir = "{node_dir}"

[host]
cpus = 64
memory_mb = 65536

[machine_types.XS]
cpus = 0.5
memory_mb = 512

[machine_types.RAY]
cpus = 0.5
memory_mb = 512

[machine_backends]
RAY = "ray"
"""


def live(http: httpx.Client, app: str) -> list[str]:
    views = http.get(f"/api/v1/apps/{app}/runners").json()
    return [v["id"] for v in views if v["state"] not in ENDED]


ENDED = ("terminated", "failed")  # fal's runner states: every other one is alive


def trial(platform: PlatformProcess, app: str) -> float:
    with platform.http() as http:
        for runner_id in live(http, app):
            http.post(f"/api/v1/runners/{runner_id}/stop")
        wait_for(lambda: not live(http, app), timeout=60, what=f"{app} at zero runners")
    with platform.http() as http:  # a fresh connection
        started = time.perf_counter()
        resp = http.post(f"/local/{app}/ping", json={})
        elapsed = time.perf_counter() - started
    resp.raise_for_status()
    with platform.http() as http:
        (runner,) = [v for v in http.get(f"/api/v1/apps/{app}/runners").json()
                     if v["state"] not in ENDED]  # fmt: skip
    READY_FROM.setdefault(app, set()).add(str(runner.get("ready_from", "?")))
    return elapsed


READY_FROM: dict[str, set[str]] = {}  # app -> how its runners' readiness was learned


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=7)
    args = parser.parse_args()
    from ray.cluster_utils import Cluster

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every address on 127.0.0.1
    console = Console()
    with tempfile.TemporaryDirectory(prefix="tidal-ray-bench-") as tmp:
        root = Path(tmp)
        cluster = Cluster(
            initialize_head=True, connect=False,
            head_node_args={"num_cpus": 2, "node_ip_address": "127.0.0.1",
                            "include_dashboard": False},
        )  # fmt: skip
        try:
            cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
            app_dir = root / "app"
            app_dir.mkdir()
            (app_dir / "cold.py").write_text(APP_PY)
            data_dir = root / "platform"
            data_dir.mkdir()
            (data_dir / "tidal.toml").write_text(CONFIG.format(node_dir=root / "nodes"))
            extra = ["--backend", "local", "--backend", "ray", "--ray-address", cluster.address]
            with start_platform(data_dir, extra_args=extra) as platform:
                platform.cli("deploy", "cold.py::Cold", "--app-name", "cold-local", cwd=app_dir)
                platform.cli("deploy", "cold.py::ColdRay", "--app-name", "cold-ray", cwd=app_dir)
                times: dict[str, list[float]] = {"local": [], "ray": []}
                for app in ("cold-local", "cold-ray"):
                    trial(platform, app)  # warm-up: bundle cached, worker imports cached
                for _ in range(args.trials):
                    for backend in ("local", "ray"):
                        times[backend].append(trial(platform, f"cold-{backend}"))
        finally:
            cluster.shutdown()
    table = Table(title=f"request at zero runners -> response ({args.trials} trials each)")
    for column in ("backend", "p50 ms", "p90 ms", "min ms", "max ms"):
        table.add_column(column, justify="right")
    for backend, values in times.items():
        ms = [v * 1000 for v in values]
        table.add_row(
            backend, f"{statistics.median(ms):.0f}", f"{percentile(ms, 0.9):.0f}",
            f"{min(ms):.0f}", f"{max(ms):.0f}",
        )  # fmt: skip
    console.print(table)
    for app, learned in READY_FROM.items():
        console.print(f"  {app}: runners ready from {', '.join(sorted(learned))}")


if __name__ == "__main__":
    main()
