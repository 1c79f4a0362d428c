"""GPU placement on a real host: a PyTorch model server on a `GPU-<MODEL>` machine type.

Starts a platform (GPUs found by nvidia-smi), deploys bench/gpu_app (no requirements: runners
use this Python, so torch must be importable here for a real GPU check), and measures the
cold and warm request. Then the first app holds every GPU of its type, a second app's
request waits (its runner `pending`), and scaling the first down lets the second run on
a GPU the first released. On a machine without GPUs, `--fake-gpus N` gives the platform a
fake inventory (GPU-FAKE) to check the orchestration; the app then says torch is missing
or reports cuda unavailable.

    python bench/gpu_check.py [--fake-gpus N] [--warm 20]

Exits 0 only if the first app answered on cuda (with --fake-gpus: with CUDA_VISIBLE_DEVICES
set), the second was pending while the first held the GPU(s), and it was served after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from subprocess import SubprocessError
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from tidal.backends.local import LocalBackend
from tidal.machines import detect_gpus
from tidal.testing import PlatformProcess, start_platform, wait_for

APP_DIR = Path(__file__).parent / "gpu_app"
TARGET = "app.py::GpuModel"
FIRST, SECOND = "gpu-first", "gpu-second"
CHECKS = 4  # on cuda, first holds all, second pending, second served
TIMEOUT_S = 600.0  # a cold start imports torch and initialises CUDA

console = Console(width=None if sys.stdout.isatty() else 150)


@dataclass
class Row:
    step: str
    result: str
    seconds: float | None = None
    ok: bool | None = None  # None: information only


def runners(platform: PlatformProcess, app: str, *states: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(platform.cli("runners", "list", app, "--json").stdout)
    return [r for r in listed if not states or r["state"] in states]


def deploy(platform: PlatformProcess, machine_type: str, name: str) -> str:
    env = {"TIDAL_BENCH_MACHINE_TYPE": machine_type}
    out = platform.cli("deploy", TARGET, "--app-name", name, "--json", cwd=APP_DIR, env=env)
    return str(json.loads(out.stdout)["url"]).rstrip("/") + "/infer"


def infer(http: httpx.Client, url: str) -> dict[str, Any]:
    resp = http.post(url, json={})
    if resp.status_code != 200:
        raise AssertionError(f"POST {url} answered {resp.status_code}: {resp.text[:800]}")
    body: dict[str, Any] = resp.json()
    return body


def describe(body: dict[str, Any]) -> str:
    visible = f"CUDA_VISIBLE_DEVICES={body.get('cuda_visible_devices')!r}"
    if body.get("torch") == "missing":
        return f"torch missing; {visible}"
    gpu = f" ({body['gpu_name']})" if body.get("gpu_name") else ""
    return f"device {body.get('device')}{gpu}; {visible}; forward {body.get('ms')} ms"


def gpu_types(platform: PlatformProcess) -> list[tuple[str, list[str]]]:
    """(machine type, ids of the host's GPUs it can use) for each GPU type offered."""
    machines = httpx.get(f"{platform.url}/api/v1/machines", timeout=10).json()
    gpus = machines["host"]["gpus"]
    return [
        (t["name"], [g["id"] for g in gpus if t["gpu_model"] in (None, g["model"])])
        for t in machines["machine_types"]
        if t["gpus"] > 0
    ]


def check(platform: PlatformProcess, fake: bool, n_warm: int, rows: list[Row]) -> None:
    types = gpu_types(platform)
    if not types:
        raise LookupError("the platform offers no GPU machine type")
    machine_type, gpu_ids = types[0]
    k = len(gpu_ids)
    kind = "fake inventory" if fake else "nvidia-smi"
    rows.append(Row("GPU types offered", f"{', '.join(t for t, _ in types)}; using "
                    f"{machine_type} x{k} (ids {','.join(gpu_ids)}, {kind})"))  # fmt: skip
    t0 = time.monotonic()
    first_url = deploy(platform, machine_type, FIRST)
    rows.append(Row(f"deploy {FIRST}", f"machine_type={machine_type}", time.monotonic() - t0))
    with platform.http(timeout=TIMEOUT_S) as http:
        t0 = time.monotonic()
        cold = infer(http, first_url)
        visible = cold.get("cuda_visible_devices") or ""
        on_gpu = bool(visible) if fake else str(cold.get("device", "")).startswith("cuda")
        rows.append(Row("cold first request", describe(cold), time.monotonic() - t0, on_gpu))
        if cold.get("torch") == "missing":
            rows.append(Row("torch", "missing in the platform's Python: placement only", ok=None))
        warm = []
        for _ in range(n_warm):
            t0 = time.monotonic()
            body = infer(http, first_url)
            warm.append(time.monotonic() - t0)
        rows.append(
            Row(f"warm request p50 of {len(warm)}", describe(body), statistics.median(warm))
        )

        # The first app holds every GPU of the type; the second must wait for one.
        t0 = time.monotonic()
        platform.cli("apps", "scale", FIRST, "--min-concurrency", str(k),
                     "--max-concurrency", str(k))  # fmt: skip
        ready = wait_for(
            lambda: len(r := runners(platform, FIRST, "ready")) >= k and r,
            timeout=TIMEOUT_S, interval=0.2, what=f"{k} ready runners of {FIRST}",
        )  # fmt: skip
        held = sorted(g for r in ready for g in r["gpus"])
        rows.append(Row(f"{FIRST} scaled to min_concurrency={k}", f"its runners hold GPU(s) "
                        f"{','.join(held)}", time.monotonic() - t0, held == sorted(gpu_ids)))  # fmt: skip
        second_url = deploy(platform, machine_type, SECOND)
        result: dict[str, Any] = {}

        def request_second() -> None:
            try:
                result["body"] = infer(http, second_url)
            except Exception as exc:
                result["error"] = exc
            result["at"] = time.monotonic()

        t0 = time.monotonic()
        waiter = threading.Thread(target=request_second, daemon=True)
        waiter.start()
        try:
            pending = wait_for(lambda: runners(platform, SECOND, "pending"), timeout=30,
                               interval=0.2, what=f"a pending runner of {SECOND}")  # fmt: skip
        except AssertionError:
            pending = []
        busy = not result and len(runners(platform, FIRST, "ready")) >= k
        reason = pending[0]["reason"] if pending else "never pending"
        rows.append(Row(f"{SECOND} while {FIRST} holds the GPU(s)", f"pending: {reason}",
                        time.monotonic() - t0, bool(pending) and busy))  # fmt: skip
        names_gpus = "GPU(s)" in reason  # a GPU type's CPU share is checked before its GPUs
        rows.append(Row("  pending reason names GPUs", "yes" if names_gpus else
                        "no: the CPUs/memory the GPU type takes are full first"))  # fmt: skip

        t0 = time.monotonic()
        platform.cli("apps", "scale", FIRST, "--min-concurrency", "0", "--keep-alive", "0")
        waiter.join(TIMEOUT_S)
        if "error" in result or "body" not in result:
            raise AssertionError(f"the request to {SECOND} failed: {result.get('error')}")
        second = result["body"]
        got = second.get("cuda_visible_devices") or ""
        served = (
            bool(got) and got in held and (fake or str(second.get("device")).startswith("cuda"))
        )
        rows.append(Row(f"{SECOND} served after scale-down", f"{describe(second)}; "
                        f"released by {FIRST}: {','.join(held)}", result["at"] - t0, served))  # fmt: skip


def render(rows: list[Row], ok: bool) -> None:
    table = Table(title="tidal GPU placement check, local backend")
    table.add_column("step", no_wrap=True)
    table.add_column("result")
    table.add_column("time", justify="right", no_wrap=True)
    marks = {True: "[green]✓[/] ", False: "[red]✗[/] ", None: ""}
    for row in rows:
        took = "" if row.seconds is None else f"{row.seconds * 1000:.0f} ms"
        table.add_row(row.step, marks[row.ok] + row.result, took)
    console.print(table)
    console.print("[bold green]PASS[/]" if ok else "[bold red]FAIL[/]")


def reap_runners(data_dir: Path) -> None:
    if reaped := LocalBackend(data_dir / "runners").reap_orphans():
        console.print(f"[red]{reaped} runner group(s) outlived their platform; killed them")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GPU placement on this host's GPUs.")
    parser.add_argument("--fake-gpus", type=int, default=0, metavar="N",
                        help="without GPUs here: a fake inventory of N GPUs (GPU-FAKE)")  # fmt: skip
    parser.add_argument("--warm", type=int, default=20, help="warm requests for the p50")
    args = parser.parse_args(argv)
    if args.fake_gpus < 0 or args.warm < 1:
        parser.error("--fake-gpus must be >= 0 and --warm >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fake = not detect_gpus() and args.fake_gpus > 0
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tidal-gpu-", ignore_cleanup_errors=True) as tmp:
        data_dir = Path(tmp)
        if fake:
            config = f'[host]\ngpus = {args.fake_gpus}\ngpu_model = "FAKE"\n'
            (data_dir / "tidal.toml").write_text(config)
        try:
            with contextlib.ExitStack() as stack:
                stack.callback(reap_runners, data_dir)
                t0 = time.monotonic()
                platform = stack.enter_context(start_platform(data_dir))
                rows.append(Row("platform started", platform.url, time.monotonic() - t0))
                check(platform, fake, args.warm, rows)
        except LookupError:
            console.print("[bold red]no GPU here:[/] nvidia-smi found none; run on a GPU machine, "
                          "or pass --fake-gpus N to check the orchestration with fake GPUs")  # fmt: skip
            return 2
        except (AssertionError, httpx.HTTPError, OSError, KeyError, SubprocessError) as exc:
            rows.append(Row("failed", f"{type(exc).__name__}: {exc}", ok=False))
        except KeyboardInterrupt:
            console.print("interrupted; the platform was stopped")
            return 130
    checks = [r.ok for r in rows if r.ok is not None]
    ok = len(checks) == CHECKS and all(checks)
    render(rows, ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
