"""Queue throughput: N requests through fal's queue API (submit, poll status until
COMPLETED) against the same N made synchronously through the gateway, same platform,
same warm runner. Also the latency of a status poll, under load and idle.

Three ways of driving it, each against its own sync baseline in the same run:
- httpx (the first table's first rows): the client as most Python callers write it.
  It costs ~2 ms of CPU per request, so with 16 tasks the bench process saturates a
  core and the ratio is mostly the client's: a queued request is two calls (submit,
  poll) against the sync path's one;
- the platform's CPU per request over those same runs (/proc), which the client's cost
  does not enter, and a lean keep-alive client (bench/_lean_client.py, ~0.05 ms a
  request) that leaves the platform as the bottleneck;
- over the lean runs, the platform's and the whole machine's CPU (/proc/stat: client,
  platform and runner together) per sync request, queued request and status poll,
  and from them a bound no queue could pass on this machine: a queued request is at
  least a sync request plus a second call (fal's submit, then poll), so with its
  writes free it still costs a sync request plus a poll;
- for the httpx and lean queue runs, the rate inside the platform: first request
  stored to last completed, from the queue's own timestamps (its SQLite file), which
  says whether the queue keeps up with what is submitted, the client's polls aside;
- fal-client itself (`fal_client.run` against `fal_client.subscribe`, its default 0.1 s
  poll interval, then the result's GET) on a second platform serving https, which
  fal-client requires.

    python bench/queue_throughput.py [-n 500] [--concurrency 16] [--polls 2000]
                                     [--lean-n 3000] [--fal-n 300] [--no-fal-client]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from _lean_client import CpuMeter, LeanConnection, MachineMeter, Phase, lean_fan_out
from _warm_app import WarmServer, app_source, data_dir, pct, run_on_warm_platform, write_app
from rich.table import Table

from tidal.backends.local import LocalBackend
from tidal.gateway import queue_memory
from tidal.testing import PlatformProcess, start_platform
from tidal.tls import ca_bundle, make_local_certificate

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


async def lean_sync_run(url: str, app: str, n: int, c: int) -> dict[str, float]:
    latencies: list[float] = []

    async def one(conn: LeanConnection, i: int) -> None:
        t = time.perf_counter()
        status, body = await conn.request("POST", f"/local/{app}/", b'{"i": %d}' % i)
        assert status == 200, body
        latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await lean_fan_out(url, n, c, one)
    elapsed = time.perf_counter() - t0
    return {"rps": n / elapsed, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}


async def lean_queue_run(url: str, app: str, n: int, c: int) -> dict[str, Any]:
    """As queue_run (all submits, then each polled every 10 ms until COMPLETED)."""
    ids: list[str] = []
    ends: list[float] = []

    async def submit(conn: LeanConnection, i: int) -> None:
        status, body = await conn.request("POST", f"/queue/local/{app}/", b'{"i": %d}' % i)
        assert status == 200, body
        ids.append(json.loads(body)["request_id"])

    async def wait(conn: LeanConnection, i: int) -> None:
        while True:
            status, body = await conn.request("GET", f"/queue/local/{app}/requests/{ids[i]}/status")
            if status == 200:
                assert b'"error"' not in body, body
                ends.append(time.perf_counter())
                return
            await asyncio.sleep(0.01)

    t0 = time.perf_counter()
    await lean_fan_out(url, n, c, submit)
    submitted = time.perf_counter() - t0
    await lean_fan_out(url, n, c, wait)
    return {"rps": n / (max(ends) - t0), "submit_rps": n / submitted, "ids": ids}


async def lean_idle_polls(url: str, app: str, ids: list[str], k: int, c: int) -> list[float]:
    latencies: list[float] = []

    async def one(conn: LeanConnection, i: int) -> None:
        t = time.perf_counter()
        status, _ = await conn.request(
            "GET", f"/queue/local/{app}/requests/{ids[i % len(ids)]}/status"
        )
        assert status == 200
        latencies.append(time.perf_counter() - t)

    await lean_fan_out(url, k, c, one)
    return latencies


def inside_rate(db: Path, ids: list[str]) -> float:
    """Requests completed per second inside the platform, from the first submit's
    storing to the last completion (the queue's own timestamps, read from its SQLite
    file): whether the queue keeps up with what is submitted, the client's polls aside."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        first, last, count = conn.execute(
            "SELECT min(created_at), max(completed_at), count(*) FROM queue_requests "
            f"WHERE id IN ({','.join('?' * len(ids))}) AND status = 'COMPLETED'",
            ids,
        ).fetchone()
    assert count == len(ids), f"{count} of {len(ids)} completed"
    return float(count / (last - first))


async def measure(url: str, app: str, args: argparse.Namespace, pid: int, db: Path) -> Table:
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    meter = CpuMeter(pid)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await sync_run(http, f"/local/{app}/", 50, args.concurrency)  # warm runner, connections
        with Phase(meter) as sync_phase:
            sync = await sync_run(http, f"/local/{app}/", args.n, args.concurrency)
        with Phase(meter) as queue_phase:
            queued = await queue_run(http, app, args.n, args.concurrency)
        idle = await idle_polls(http, app, queued["ids"], args.polls, args.concurrency)  # type: ignore[arg-type]
        alone = await idle_polls(http, app, queued["ids"], args.polls // 4, 1)  # type: ignore[arg-type]
    machine = MachineMeter()
    with Phase(meter) as lean_sync_cpu, Phase(machine) as lean_sync_all:
        lean_sync = await lean_sync_run(url, app, args.lean_n, args.concurrency)
    with Phase(meter) as lean_queue_cpu, Phase(machine) as lean_queue_all:
        lean_queue = await lean_queue_run(url, app, args.lean_n, args.concurrency)
    lean_ids: list[str] = lean_queue["ids"]
    with Phase(meter) as poll_cpu, Phase(machine) as poll_all:
        lean_idle = await lean_idle_polls(url, app, lean_ids, args.polls, args.concurrency)
    lean_alone = await lean_idle_polls(url, app, lean_ids, args.polls // 4, 1)
    # As many requests again as the platform keeps whole: lean_ids' results are then
    # older than those (their bodies read from the database), their statuses not.
    await lean_queue_run(url, app, queue_memory.FINISHED_KEPT, args.concurrency)
    lean_old = await lean_idle_polls(url, app, lean_ids, args.polls // 4, 1)
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
    inside = inside_rate(db, queued["ids"])  # type: ignore[arg-type]
    table.add_row("", "first stored→last completed, inside the platform, req/s",
                  f"{inside:.0f}", f"{inside / sync['rps']:.2f}x")  # fmt: skip
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
    if sync_phase.cpu is not None and queue_phase.cpu is not None:
        # The platform process's CPU over the two runs above: what the client costs does
        # not enter it. "vs sync" is sync's cost over the queue's (1.00x: as cheap).
        sync_ms, queue_ms = sync_phase.cpu / args.n * 1000, queue_phase.cpu / args.n * 1000
        table.add_row("platform CPU", "per sync request, ms (httpx runs above)",
                      f"{sync_ms:.2f}", "1.00x")  # fmt: skip
        table.add_row("", "per queued request (submit, run, complete, polls), ms",
                      f"{queue_ms:.2f}", f"{sync_ms / queue_ms:.2f}x")  # fmt: skip
    lean = f"lean client ({args.lean_n})"
    table.add_row(lean, "sync requests/s (baseline)", f"{lean_sync['rps']:.0f}", "1.00x")
    table.add_row("", "sync latency p50 / p99 ms",
                  f"{lean_sync['p50']:.1f} / {lean_sync['p99']:.1f}", "")  # fmt: skip
    table.add_row("", "queue submitted→completed req/s", f"{lean_queue['rps']:.0f}",
                  f"{lean_queue['rps'] / lean_sync['rps']:.2f}x")  # fmt: skip
    lean_inside = inside_rate(db, lean_ids)
    table.add_row("", "queue first stored→last completed, inside, req/s",
                  f"{lean_inside:.0f}", f"{lean_inside / lean_sync['rps']:.2f}x")  # fmt: skip
    table.add_row("", "queue submits/s", f"{lean_queue['submit_rps']:.0f}",
                  f"{lean_queue['submit_rps'] / lean_sync['rps']:.2f}x")  # fmt: skip
    table.add_row("", f"status poll idle, {args.concurrency} clients, p50 / p99 ms",
                  f"{pct(lean_idle, 0.5):.1f} / {pct(lean_idle, 0.99):.1f}", "")  # fmt: skip
    table.add_row("", "status poll idle, one client, p50 / p99 ms",
                  f"{pct(lean_alone, 0.5):.2f} / {pct(lean_alone, 0.99):.2f}", "")  # fmt: skip
    table.add_row("", f"the same, results older than the newest {queue_memory.FINISHED_KEPT}",
                  f"{pct(lean_old, 0.5):.2f} / {pct(lean_old, 0.99):.2f}", "")  # fmt: skip
    # CPU per call over the lean runs, of the platform and of the whole machine (client,
    # platform, runner). "vs sync" is a sync request's cost over this one's: for the
    # queued request, the most the queue could reach where the cores are the limit.
    per = [(lean_sync_cpu, lean_sync_all, args.lean_n, "sync request"),
           (lean_queue_cpu, lean_queue_all, args.lean_n, "queued request"),
           (poll_cpu, poll_all, args.polls, f"idle status poll ({args.concurrency} clients)")]  # fmt: skip
    costs = [(p.cpu / n * 1000, a.cpu / n * 1000, what)
             for p, a, n, what in per if p.cpu is not None and a.cpu is not None]  # fmt: skip
    if len(costs) == len(per):
        base = costs[0][1]
        for platform_ms, machine_ms, what in costs:
            table.add_row("", f"CPU per {what}, ms: platform / whole machine",
                          f"{platform_ms:.2f} / {machine_ms:.2f}", f"{base / machine_ms:.2f}x")  # fmt: skip
        # A queued request is at least a sync one plus a second call (fal's protocol:
        # submit, then poll), the second costing at least a status poll: with its
        # three durable writes free, the queue could still reach no more than this.
        bound = base / (base + costs[2][1])
        table.add_row("", "bound for any queue: a sync request's cost plus a poll's",
                      f"{base + costs[2][1]:.2f}", f"{bound:.2f}x")  # fmt: skip
        busy = [f"{a.cpu / a.wall / machine.cores:.0%}" for _, a, _, _ in per[:2] if a.cpu]
        table.add_row("", f"machine busy in the sync / queue runs ({machine.cores} cores)",
                      " / ".join(busy), "")  # fmt: skip
    return table


async def fal_client_runs(url: str, app: str, n: int, c: int) -> dict[str, float]:
    """`fal_client.run` (the sync path) against `fal_client.subscribe` (submit, poll
    status every 0.1 s, GET the result), n each from c tasks. fal-client reads the
    hosts from the environment when it is imported, so this imports it afresh."""
    host = urlsplit(url).netloc
    os.environ.update(FAL_KEY="tidal-bench", FAL_RUN_HOST=host, FAL_QUEUE_RUN_HOST=f"{host}/queue")
    for name in [m for m in sys.modules if m == "fal_client" or m.startswith("fal_client.")]:
        del sys.modules[name]
    import fal_client

    client = fal_client.AsyncClient()
    out: dict[str, float] = {}
    try:
        for label, call in (("run", client.run), ("subscribe", client.subscribe)):
            await call(f"local/{app}", {"i": 0})  # connections, runner warm
            latencies: list[float] = []

            async def one(i: int, call: Any = call, latencies: list[float] = latencies) -> None:
                t = time.perf_counter()
                assert await call(f"local/{app}", {"i": i}) == {"ok": True}
                latencies.append(time.perf_counter() - t)

            t0 = time.perf_counter()
            await fan_out(n, c, one)
            out[label] = n / (time.perf_counter() - t0)
            out[f"{label}_p50"] = pct(latencies, 0.5)
    finally:
        await (await client._client).aclose()
    return out


@contextlib.contextmanager
def https_platform(source: str, function: str) -> Iterator[tuple[PlatformProcess, str]]:
    """A second platform, serving https (fal-client's URLs are https), with `function`
    deployed; its clients trust it through SSL_CERT_FILE, set here for this process."""
    with tempfile.TemporaryDirectory(prefix="tidal-bench-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        app_dir = write_app(root, source)
        cert = make_local_certificate(root / "tls")
        data = data_dir(root / "data", f"tls_certfile = {json.dumps(str(cert.cert_file))}\n"
                        f"tls_keyfile = {json.dumps(str(cert.key_file))}\n[host]\ncpus = 64\n"
                        "memory_mb = 131072\n")  # fmt: skip
        os.environ["SSL_CERT_FILE"] = str(ca_bundle(cert.ca_file, root / "tls" / "bundle.pem"))
        try:
            with start_platform(data, ["--isolation", "off", "--sandbox", "off"],
                                tls_ca=cert.ca_file) as platform:  # fmt: skip
                view = json.loads(platform.cli("deploy", f"app.py::{function}", "--json",
                                               cwd=app_dir).stdout)  # fmt: skip
                yield platform, view["name"]
        finally:
            LocalBackend(data / "runners").reap_orphans()


def fal_client_table(args: argparse.Namespace) -> Table:
    with https_platform(app_source([TRIVIAL]), TRIVIAL.name) as (platform, app):
        runs = asyncio.run(fal_client_runs(platform.url, app, args.fal_n, args.concurrency))
    table = Table(title=f"fal-client against tidal (https): {args.fal_n} calls, "
                        f"{args.concurrency} concurrent, its defaults")  # fmt: skip
    for col in ("path", "metric", "value", "vs sync"):
        table.add_column(col, justify="left" if col in ("path", "metric") else "right")
    table.add_row("fal_client.run (sync)", "requests/s", f"{runs['run']:.0f}", "1.00x")
    table.add_row("", "latency p50 ms", f"{runs['run_p50']:.1f}", "")
    table.add_row("fal_client.subscribe (queue)", "requests/s", f"{runs['subscribe']:.0f}",
                  f"{runs['subscribe'] / runs['run']:.2f}x")  # fmt: skip
    table.add_row("", "latency p50 ms", f"{runs['subscribe_p50']:.1f}", "")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=500, help="requests per path")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--polls", type=int, default=2000, help="idle status polls")
    parser.add_argument("--lean-n", type=int, default=3000, help="requests per path, lean client")
    parser.add_argument("--fal-n", type=int, default=300, help="calls per path, fal-client")
    parser.add_argument("--no-fal-client", action="store_true", help="skip the fal-client table")
    args = parser.parse_args(argv)

    def run(platform: PlatformProcess, views: list[dict[str, Any]]) -> list[Table]:
        db = platform.data_dir / "tidal.db"
        tables = [
            asyncio.run(measure(platform.url, views[0]["name"], args, platform.process.pid, db))
        ]
        if not args.no_fal_client:
            tables.append(fal_client_table(args))
        return tables

    return run_on_warm_platform(app_source([TRIVIAL]), [TRIVIAL.name], run)


if __name__ == "__main__":
    sys.exit(main())
