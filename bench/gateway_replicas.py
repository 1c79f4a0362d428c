"""What sharing one PostgreSQL database costs platform replicas, measured.

1. Claims under contention: P processes (each its own engine, as separate platforms
   are) drain one shared queue of N requests, claim then complete, as the gateway's
   queue workers do. Claims per second and duplicate claims (must be 0), against the
   same drain by one process on SQLite (today's default).
2. Two real platforms behind a "load balancer" (the client alternates between them)
   sharing one PostgreSQL database: N queued requests submitted half to each, every
   result read back; which platform's runner served each (the queue is shared, so
   either may), and how many requests ran more than once (must be 0).
3. How soon a scaling change made through one replica takes effect on the other:
   told by LISTEN/NOTIFY, against the poll alone (`registry_listen = false`, every
   `registry_poll_seconds` = 2 s) in the same run.

    .venv/bin/python bench/gateway_replicas.py [-n 2000] [--processes 1,2,4] [--queued 400]
                                               [--changes 10]

It starts its own PostgreSQL server (Debian's binaries, fsync on) and platforms on
free loopback ports in temp dirs, and stops them all at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from _warm_app import ROOMY_TOML, WHO_BODY, WarmServer, app_source, console, replica_dirs, write_app
from rich.table import Table

from tidal.control.db import open_database
from tidal.control.queue_store import QueueStore
from tidal.testing import PlatformProcess, start_platform, wait_for
from tidal.testing_postgres import PostgresServer, postgres_server

WHO = WarmServer("who", "max_multiplexing=16, max_concurrency=1, keep_alive=300", host="0.0.0.0")


def _fill(url: str, n: int) -> None:
    engine = open_database(url)
    store = QueueStore(engine)
    for i in range(n):
        store.submit("local", "bench", "POST", "/", "", [], b"{}", i % 3, no_retry=False)
    engine.dispose()


def _drain(url: str, ready: object, go: object, out: object) -> None:
    engine = open_database(url)
    store = QueueStore(engine)
    claimed: list[str] = []
    ready.release()  # type: ignore[attr-defined]
    go.wait()  # type: ignore[attr-defined]
    while store.waiting("local", "bench"):
        item = store.claim_next("local", "bench")
        if item is not None:
            store.complete(item.id, 200, [], b"ok")
            claimed.append(item.id)
    out.put(claimed)  # type: ignore[attr-defined]
    engine.dispose()


def drain(url: str, n: int, processes: int) -> tuple[float, int, int]:
    """(claims per second, claims, duplicate claims) for `processes` draining `n`."""
    _fill(url, n)
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_drain, args=(url, ready, go, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    start = time.perf_counter()
    go.set()
    claims: list[str] = []
    for _ in procs:
        claims += out.get(timeout=600)
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join(30)
    return len(claims) / elapsed, len(claims), len(claims) - len(set(claims))


def measure_claims(n: int, counts: list[int], pg: PostgresServer, tmp: Path) -> None:
    table = Table("database", "processes", "requests", "claims/s", "duplicate claims")
    rate, total, dupes = drain(f"sqlite:///{tmp / 'claims.db'}", n, 1)
    table.add_row("SQLite (file)", "1", str(total), f"{rate:.0f}", str(dupes))
    for count in counts:
        url = pg.create_database()  # a fresh queue for each run
        rate, total, dupes = drain(url, n, count)
        pg.drop_database(url)
        table.add_row("PostgreSQL", str(count), str(total), f"{rate:.0f}", str(dupes))
    console.print(table)


def measure_replicas(queued: int, pg_url: str) -> None:
    with tempfile.TemporaryDirectory(prefix="tidal-replicas-") as tmp:
        root = Path(tmp)
        app_dir = write_app(root, app_source([WHO], body=WHO_BODY))
        dirs = replica_dirs(root)
        with start_platform(dirs[0], database_url=pg_url) as a:
            a.cli("deploy", "app.py::who", cwd=app_dir)
            # The second replica starts after the deploy: it reads the app from the
            # shared registry (a running replica does not hear of deploys; see the doc).
            with start_platform(dirs[1], database_url=pg_url) as b:
                replicas = [a, b]
                clients = [r.http() for r in replicas]
                for c in clients:  # a warm runner on each, as a steady state would have
                    warm = c.post("/local/who/")
                    assert warm.status_code == 200, warm.text
                start = time.perf_counter()
                ids = []
                for i in range(queued):
                    resp = clients[i % 2].post("/queue/local/who/", json={"i": i})
                    ids.append((i % 2, resp.json()["request_id"]))
                served = Counter[str]()
                for i, (first, request_id) in enumerate(ids):
                    # Read back through the *other* replica half the time: shared state.
                    c = clients[(first + i // 2) % 2]

                    def done(c: httpx.Client = c, rid: str = request_id) -> bool:
                        s = c.get(f"/queue/local/who/requests/{rid}/status").json()
                        return bool(s["status"] == "COMPLETED")

                    wait_for(done, timeout=120, interval=0.05, what=request_id)
                    body = c.get(f"/queue/local/who/requests/{request_id}").json()
                    served[_owner(replicas, body["runner"])] += 1
                elapsed = time.perf_counter() - start
                for c in clients:
                    c.close()
        attempts = _attempts(pg_url)
    table = Table("queued", "submitted to", "served by", "ran twice", "seconds", "requests/s")
    table.add_row(
        str(queued), "a/b alternately", ", ".join(f"{k}: {v}" for k, v in sorted(served.items())),
        str(sum(1 for n in attempts if n > 1)), f"{elapsed:.1f}", f"{queued / elapsed:.0f}",
    )  # fmt: skip
    console.print(table)


def change_delay(pg: PostgresServer, trials: int, listen: bool) -> list[float]:
    """Milliseconds from a scaling change answered by replica a until replica b runs the
    app with it (b's `max_runners` follows max_concurrency from b's own controller)."""
    url = pg.create_database()
    delays = []
    with tempfile.TemporaryDirectory(prefix="tidal-changes-") as tmp:
        root = Path(tmp)
        write_app(root, app_source([WHO], body=WHO_BODY))
        dirs = replica_dirs(root, f"registry_listen = {str(listen).lower()}\n{ROOMY_TOML}")
        with (
            start_platform(dirs[0], database_url=url) as a,
            start_platform(dirs[1], database_url=url) as b,
            a.http() as http_a,
            b.http() as http_b,
        ):
            a.cli("deploy", "app.py::who", cwd=root / "app")
            wait_for(lambda: http_b.get("/api/v1/apps/who").json().get("max_runners") == 1,
                     timeout=30, what="b to run the app")  # fmt: skip
            for i in range(trials):
                wanted = 2 + i % 5
                resp = http_a.patch("/api/v1/apps/who/scaling", json={"max_concurrency": wanted})
                assert resp.status_code == 200, resp.text
                start = time.perf_counter()
                wait_for(
                    lambda w=wanted: http_b.get("/api/v1/apps/who").json()["max_runners"] == w,
                    timeout=30, interval=0.002, what="b to apply the change",
                )  # fmt: skip
                delays.append((time.perf_counter() - start) * 1000)
                time.sleep(0.3)  # apart, so that each change is seen on its own
    pg.drop_database(url)
    return delays


def measure_changes(pg: PostgresServer, trials: int) -> None:
    table = Table("told by", "changes", "p50 ms", "max ms", "p50 vs poll")
    poll = sorted(change_delay(pg, trials, listen=False))
    notify = sorted(change_delay(pg, trials, listen=True))
    for name, got in (("poll every 2 s (baseline)", poll), ("LISTEN/NOTIFY", notify)):
        p50 = got[len(got) // 2]
        table.add_row(name, str(len(got)), f"{p50:.1f}", f"{got[-1]:.1f}",
                      f"{p50 / poll[len(poll) // 2]:.3f}")  # fmt: skip
    console.print(table)


def _owner(replicas: list[PlatformProcess], runner_id: str) -> str:
    """Which replica runs the runner (its pid file is in that replica's data dir)."""
    for name, replica in zip("ab", replicas, strict=True):
        if (replica.data_dir / "runners" / f"{runner_id}.pid").exists():
            return name
    return "?"


def _attempts(url: str) -> list[int]:
    from sqlalchemy import text

    engine = open_database(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT attempts FROM queue_requests WHERE app = 'who'"))
        out = [int(r[0]) for r in rows]
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="requests per claim run")
    parser.add_argument("--processes", default="1,2,4", help="claiming processes to try")
    parser.add_argument("--queued", type=int, default=400, help="requests through 2 replicas")
    parser.add_argument("--changes", type=int, default=10, help="scaling changes timed")
    args = parser.parse_args()
    counts = [int(c) for c in args.processes.split(",")]
    with postgres_server(durable=True) as pg, tempfile.TemporaryDirectory() as tmp:
        console.print("[bold]1. queue claims under contention[/] (claim + complete each)")
        measure_claims(args.n, counts, pg, Path(tmp))
        console.print("[bold]2. two platform replicas sharing one PostgreSQL database[/]")
        pg_url = pg.create_database()
        measure_replicas(args.queued, pg_url)
        console.print("[bold]3. a scaling change through a, in effect on b[/]")
        measure_changes(pg, args.changes)


if __name__ == "__main__":
    main()
