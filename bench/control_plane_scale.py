"""Control-plane cost as apps and queues grow, in one run against one platform:

- at 0, 200 and 1,000 deployed apps: a page of the apps listing (`?limit=100`), and a
  warm sync call's latency to an unrelated app, alone and while a client polls the
  listing (as the dashboard's apps page does, here 10 times a second), in turns
  (the filler apps are deployed without runner templates: starting 800 templates
  would measure deploys, not the listing);
- how soon a sync call hears 429 once its app's waiters are at its max_waiting;
- one app's queue filled to 20,000 deep (its runner never gets ready, so nothing
  leaves): the submit rate and the back-of-queue status poll, per 1,000.

    python bench/control_plane_scale.py [--apps 0,200,1000] [--depth 20000]
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

from tidal.backends.local import free_port
from tidal.testing import PlatformProcess

STUCK = """
@tidal.function(exposed_port={port}, max_concurrency=1, keep_alive=600)
def stuck():
    time.sleep(3600)  # never listens: its queue only fills
"""
PAGE = 100
POLL_EVERY = 0.1
LIST_SAMPLES = 200  # so that p99 is not the one slowest
ROUNDS = 4  # warm calls alone and with the poller, in turns


async def timed(http: httpx.AsyncClient, method: str, url: str, **kw: Any) -> float:
    t = time.perf_counter()
    resp = await http.request(method, url, **kw)
    assert resp.status_code < 300, f"{method} {url}: {resp.status_code} {resp.text[:300]}"
    return time.perf_counter() - t


async def warm_calls(http: httpx.AsyncClient, n: int, concurrency: int = 4) -> list[float]:
    out: list[float] = []

    async def worker(k: int) -> None:
        for _ in range(k):
            out.append(await timed(http, "POST", "/local/warm/", json={}))

    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    return out


async def with_poller(http: httpx.AsyncClient, n: int) -> tuple[list[float], list[float]]:
    """Warm calls while another client polls the apps listing; (calls, list polls)."""
    polls: list[float] = []
    stop = asyncio.Event()

    async def poller() -> None:
        while not stop.is_set():
            polls.append(await timed(http, "GET", "/api/v1/apps", params={"limit": PAGE}))
            await asyncio.sleep(POLL_EVERY)

    task = asyncio.create_task(poller())
    calls = await warm_calls(http, n)
    stop.set()
    await task
    return calls, polls


async def add_apps(http: httpx.AsyncClient, template: dict[str, Any], upto: int) -> None:
    have = len((await http.get("/api/v1/apps", params={"limit": 1000})).json()) - 2
    sem = asyncio.Semaphore(4)

    async def one(i: int) -> None:
        spec = {"name": f"filler-{i:05d}", "entry": template["entry"], "kind": "function",
                "bundle_digest": template["bundle_digest"],
                # No runner templates: a deploy would start one (and retire another's),
                # 800 process starts that measure deploys, not the listing.
                "options": {"exposed_port": template["options"]["exposed_port"],
                            "runner_templates": False}}  # fmt: skip
        async with sem:
            resp = await http.post("/api/v1/apps", json={"spec": spec})
            assert resp.status_code == 201, resp.text

    await asyncio.gather(*(one(i) for i in range(max(0, have), upto)))


async def apps_rows(http: httpx.AsyncClient, counts: list[int], calls: int) -> list[list[str]]:
    template = (await http.get("/api/v1/apps/warm")).json()
    await warm_calls(http, 100)  # connections and runner warm
    rows = []
    for n in counts:
        await add_apps(http, template, n)
        # The first page after the apps were added builds their records (a spec parse
        # each); the platform keeps them, so a poller's pages after it do not.
        first = await timed(http, "GET", "/api/v1/apps", params={"limit": PAGE})
        lists = [await timed(http, "GET", "/api/v1/apps", params={"limit": PAGE})
                 for _ in range(LIST_SAMPLES)]  # fmt: skip
        # Alone and with the poller in turns, so that what else the (shared) machine does
        # meanwhile falls on both alike rather than on one.
        alone, polled, polls = [], [], []
        for _ in range(ROUNDS):
            alone += await warm_calls(http, calls // ROUNDS)
            more, more_polls = await with_poller(http, calls // ROUNDS)
            polled += more
            polls += more_polls
        rows.append([str(n), f"{first * 1000:.1f}", f"{pct(lists, 0.5):.1f} / {pct(lists, 0.99):.1f}",
                     f"{pct(polls, 0.99):.1f}", f"{pct(alone, 0.5):.1f} / {pct(alone, 0.99):.1f}",
                     f"{pct(polled, 0.5):.1f} / {pct(polled, 0.99):.1f}",
                     f"{pct(polled, 0.99) / pct(alone, 0.99):.2f}x"])  # fmt: skip
    return rows


async def refusal_row(http: httpx.AsyncClient, url: str, limit: int = 50) -> list[str]:
    """How soon a sync call hears 429 once `limit` callers wait (the app's own
    max_waiting): `limit` calls wait on the stuck app, then 50 more are timed."""
    scaled = await http.patch("/api/v1/apps/stuck/scaling", json={"max_waiting": limit})
    assert scaled.status_code == 200, scaled.text
    waiters = httpx.AsyncClient(base_url=url, timeout=600,
                                limits=httpx.Limits(max_connections=limit + 8))  # fmt: skip
    hung = [asyncio.create_task(waiters.post("/local/stuck/", json={})) for _ in range(limit)]
    try:
        while (await http.get("/api/v1/apps/stuck")).json()["waiting"] < limit:
            await asyncio.sleep(0.05)
        refused: list[float] = []
        for _ in range(50):
            t = time.perf_counter()
            resp = await http.post("/local/stuck/", json={})
            refused.append(time.perf_counter() - t)
            assert resp.status_code == 429, f"{resp.status_code} {resp.text[:200]}"
    finally:
        for task in hung:
            task.cancel()
        await asyncio.gather(*hung, return_exceptions=True)
        await waiters.aclose()
        await http.patch("/api/v1/apps/stuck/scaling", json={"max_waiting": None})
    return [str(limit), f"{pct(refused, 0.5):.1f} / {pct(refused, 0.99):.1f}"]


async def queue_rows(http: httpx.AsyncClient, depth: int, step: int, polls: int) -> list[list[str]]:
    rows: list[list[str]] = []
    first_rate = first_status = 0.0
    last_id = ""
    for start in range(0, depth, step):
        ids: list[str] = []

        async def submitter(k: int, ids: list[str] = ids) -> None:
            for _ in range(k):
                resp = await http.post("/queue/local/stuck/", json={})
                assert resp.status_code == 200, resp.text
                ids.append(resp.json()["request_id"])

        t = time.perf_counter()
        await asyncio.gather(*(submitter(step // 8) for _ in range(8)))
        rate = len(ids) / (time.perf_counter() - t)
        last_id = ids[-1]
        status = [await timed(http, "GET", f"/queue/local/stuck/requests/{last_id}/status")
                  for _ in range(polls)]  # fmt: skip
        position = (await http.get(f"/queue/local/stuck/requests/{last_id}/status")).json()
        if not rows:
            first_rate, first_status = rate, pct(status, 0.99)
        rows.append([f"{start + step:,}", f"{rate:.0f}", f"{rate / first_rate:.2f}x",
                     f"{pct(status, 0.5):.1f} / {pct(status, 0.99):.1f}",
                     f"{pct(status, 0.99) / first_status:.2f}x",
                     str(position.get("queue_position"))])  # fmt: skip
    return rows


async def measure(url: str, args: argparse.Namespace) -> list[Table]:
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        counts = [int(c) for c in args.apps.split(",")]
        apps = await apps_rows(http, counts, args.calls)
        refusal = await refusal_row(http, url)
        queue = await queue_rows(http, args.depth, args.step, args.polls)
    t1 = Table(title=f"apps listing (page of {PAGE}) and a warm sync call, alone and while "
                     f"a client polls the listing every {POLL_EVERY * 1000:.0f} ms")  # fmt: skip
    for col in ("apps", "first page ms", f"list p50 / p99 ms ({LIST_SAMPLES})",
                "list p99 ms (polled)", "warm call p50 / p99 ms",
                "warm call with poller p50 / p99 ms", "p99 with / without"):  # fmt: skip
        t1.add_column(col, justify="right")
    for row in apps:
        t1.add_row(*row)
    t3 = Table(title="a sync call to an app whose waiters are at its max_waiting (50 calls)")
    for col in ("max_waiting (set per app)", "429 p50 / p99 ms"):
        t3.add_column(col, justify="right")
    t3.add_row(*refusal)
    t2 = Table(title=f"one app's queue filled to {args.depth:,} (8 submitters); status of the "
                     f"newest request (back of the queue), {args.polls} polls per step")  # fmt: skip
    for col in ("depth", "submits/s", "vs first", "status p50 / p99 ms", "p99 vs first",
                "position"):  # fmt: skip
        t2.add_column(col, justify="right")
    for row in queue:
        t2.add_row(*row)
    return [t1, t3, t2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--apps", default="0,200,1000", help="app counts, ascending")
    parser.add_argument("--calls", type=int, default=800, help="warm calls per measurement")
    parser.add_argument("--depth", type=int, default=20_000, help="queue depth to fill to")
    parser.add_argument("--step", type=int, default=1_000, help="submits per row")
    # Of 50 polls the p99 is the slowest one: a single pause anywhere (a checkpoint, a
    # collection) decided a row. Of 200 it is the second slowest.
    parser.add_argument("--polls", type=int, default=200, help="status polls per row")
    args = parser.parse_args(argv)
    warm = WarmServer("warm", "max_multiplexing=64, min_concurrency=1, keep_alive=600")
    source = app_source([warm], extra=STUCK.format(port=free_port()))

    def run(platform: PlatformProcess, views: list[dict[str, Any]]) -> list[Table]:
        return asyncio.run(measure(platform.url, args))

    return run_on_warm_platform(source, ["warm", "stuck"], run)


if __name__ == "__main__":
    sys.exit(main())
