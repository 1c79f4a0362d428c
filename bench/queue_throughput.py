"""Queue throughput: N requests through fal's queue API (submit, poll status until
COMPLETED) against the same N made synchronously through the gateway, same platform,
same warm runner. Also the latency of a status poll, under load and idle.

    python bench/queue_throughput.py [-n 500] [--concurrency 16] [--polls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import httpx
from _warm_app import WarmServer, app_source, pct, run_on_warm_platform
from rich.table import Table

from tidal.testing import PlatformProcess

TRIVIAL = WarmServer(
    "trivial", "max_multiplexing=256, max_concurrency=1, keep_alive=300", host="0.0.0.0"
)


async def fan_out(n: int, concurrency: int, one: object) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            await one(queue.get_nowait())  # type: ignore[operator]

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def sync_run(http: httpx.AsyncClient, path: str, n: int, c: int) -> dict[str, float]:
    latencies: list[float] = []

    async def one(i: int) -> None:
        t = time.perf_counter()
        resp = await http.post(path, json={"i": i})
        assert resp.status_code == 200, resp.text
        latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await fan_out(n, c, one)
    elapsed = time.perf_counter() - t0
    return {"rps": n / elapsed, "elapsed": elapsed, "p50": pct(latencies, 0.5),
            "p99": pct(latencies, 0.99)}  # fmt: skip


async def queue_run(http: httpx.AsyncClient, app: str, n: int, c: int) -> dict[str, object]:
    submits: list[float] = []
    polls: list[float] = []
    ends: list[float] = []
    ids: list[str] = []

    async def one(i: int) -> None:
        t = time.perf_counter()
        resp = await http.post(f"/queue/local/{app}/", json={"i": i})
        assert resp.status_code == 200, resp.text
        submits.append(time.perf_counter() - t)
        ids.append(resp.json()["request_id"])

    async def wait(i: int) -> None:
        url = f"/queue/local/{app}/requests/{ids[i]}/status"
        while True:
            t = time.perf_counter()
            resp = await http.get(url)
            polls.append(time.perf_counter() - t)
            if resp.json()["status"] == "COMPLETED":
                assert "error" not in resp.json(), resp.text
                ends.append(time.perf_counter())
                return
            await asyncio.sleep(0.01)

    t0 = time.perf_counter()
    await fan_out(n, c, one)
    submitted = time.perf_counter() - t0
    await fan_out(n, c, wait)
    elapsed = max(ends) - t0
    return {"rps": n / elapsed, "elapsed": elapsed, "submit_rps": n / submitted,
            "submit_p50": pct(submits, 0.5), "submit_p99": pct(submits, 0.99),
            "polls": polls, "ids": ids}  # fmt: skip


async def idle_polls(
    http: httpx.AsyncClient, app: str, ids: list[str], k: int, c: int
) -> list[float]:
    latencies: list[float] = []

    async def one(i: int) -> None:
        t = time.perf_counter()
        resp = await http.get(f"/queue/local/{app}/requests/{ids[i % len(ids)]}/status")
        assert resp.status_code == 200
        latencies.append(time.perf_counter() - t)

    await fan_out(k, c, one)
    return latencies


async def measure(url: str, app: str, args: argparse.Namespace) -> Table:
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await sync_run(http, f"/local/{app}/", 50, args.concurrency)  # warm runner, connections
        sync = await sync_run(http, f"/local/{app}/", args.n, args.concurrency)
        queued = await queue_run(http, app, args.n, args.concurrency)
        idle = await idle_polls(http, app, queued["ids"], args.polls, args.concurrency)  # type: ignore[arg-type]
        alone = await idle_polls(http, app, queued["ids"], args.polls // 4, 1)  # type: ignore[arg-type]
    loaded: list[float] = queued["polls"]  # type: ignore[assignment]
    table = Table(title=f"tidal queue vs sync: {args.n} requests, {args.concurrency} concurrent "
                        "clients, trivial endpoint, one warm runner")  # fmt: skip
    for col in ("path", "metric", "value", "vs sync"):
        table.add_column(col, justify="left" if col in ("path", "metric") else "right")
    q_rps = float(queued["rps"])  # type: ignore[arg-type]
    table.add_row("sync (baseline)", "requests/s", f"{sync['rps']:.0f}", "1.00x")
    table.add_row("", "latency p50 / p99 ms", f"{sync['p50']:.1f} / {sync['p99']:.1f}", "")
    table.add_row("queue", "submitted→completed req/s", f"{q_rps:.0f}",
                  f"{q_rps / sync['rps']:.2f}x")  # fmt: skip
    table.add_row("", "submits/s", f"{queued['submit_rps']:.0f}",
                  f"{float(queued['submit_rps']) / sync['rps']:.2f}x")  # type: ignore[arg-type]  # fmt: skip
    table.add_row("", "submit p50 / p99 ms",
                  f"{queued['submit_p50']:.1f} / {queued['submit_p99']:.1f}", "")  # fmt: skip
    table.add_row("status poll", f"while draining p50 / p99 ms ({len(loaded)} polls)",
                  f"{pct(loaded, 0.5):.1f} / {pct(loaded, 0.99):.1f}", "")  # fmt: skip
    table.add_row("", f"idle, {args.concurrency} clients, p50 / p99 ms ({len(idle)} polls)",
                  f"{pct(idle, 0.5):.1f} / {pct(idle, 0.99):.1f}", "")  # fmt: skip
    table.add_row("", f"idle, one client, p50 / p99 ms ({len(alone)} polls)",
                  f"{pct(alone, 0.5):.1f} / {pct(alone, 0.99):.1f}", "")  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=500, help="requests per path")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--polls", type=int, default=2000, help="idle status polls")
    args = parser.parse_args(argv)

    def run(platform: PlatformProcess, views: list[dict[str, Any]]) -> list[Table]:
        return [asyncio.run(measure(platform.url, views[0]["name"], args))]

    return run_on_warm_platform(app_source([TRIVIAL]), [TRIVIAL.name], run)


if __name__ == "__main__":
    sys.exit(main())
