"""The platform's own record of every request it answered, and what is computed from it.

The gateway (sync requests) and the queue (queued ones) each hand a finished request to
`Recorder.add`, which only appends it to a list: the hot path pays for one tuple. A
background task flushes the list every `flush_seconds` (endpoint templates resolved, the
Prometheus counters of `tidal.observe.metrics` updated, rows written in a worker thread),
samples each app's runner counts, and prunes records older than the retention time.

What a record holds: app, endpoint (the OpenAPI path template where the app has one,
else the raw path), status code, latency (arrival to last byte; for a queued request,
submission to completion), queue wait (arrival to a runner slot), the runner, and
whether it was a cold start, with the breakdown. A cold start is a request served by a
runner that became ready after the request arrived; its wait splits into:

- `scale_up`: until the platform wanted a new runner (`scaling_delay`, the policy);
- `pending`: the runner waiting for capacity (CPUs, memory, GPUs) to be placed;
- `boot`: process start, imports, the App's `setup()`, until it answers HTTP;
- `handoff`: from ready to the request being given to it.

The aggregation functions at the bottom (percentiles, time buckets, error groups, the
traceback in a request's logs) are pure, and tested on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text

from tidal.domain.runner import RUNNER_PHASE_NAMES, RUNNER_PHASES

if TYPE_CHECKING:
    from tidal.backends.base import Runner
    from tidal.observe.metrics import Metrics
    from tidal.scaling.controller import Controller
    from tidal.server import Platform

log = logging.getLogger("tidal.records")

SYNC, QUEUE = "sync", "queue"
PHASES = ("scale_up", "pending", "boot", "handoff")
# Rows read for one analytics answer: a bound on the work a chart costs. Counts are
# exact whatever the volume (counted in SQL); beyond this many requests in the window,
# latency and queue-wait percentiles come from an even random sample of this size.
MAX_ROWS = 200_000
# A sample of an app's runner counts is written when they change, and at least this often.
SAMPLE_EVERY_SECONDS = 30.0
PRUNE_EVERY_SECONDS = 3600.0
# Records handled between two yields to the event loop while flushing (~1 ms of work).
FLUSH_SLICE = 200
MATCHED_KEPT = 10_000
ERROR_TEXT_LIMIT = 2000

# Reads the OpenAPI document an app serves now ((owner, app) -> document or None).
OpenAPIOf = Callable[[str, str], "dict[str, Any] | None"]
# Each live app's runner counts: (owner, app) -> (pending, starting, ready, draining,
# in_flight, waiting).
RunnerCounts = Callable[[], "dict[tuple[str, str], tuple[int, int, int, int, int, int]]"]


@dataclass(slots=True)
class RequestRecord:
    id: str
    owner: str
    app: str
    endpoint: str
    method: str
    kind: str  # SYNC or QUEUE
    started_at: float  # wall clock: arrival (sync) or submission (queue)
    finished_at: float
    latency_ms: float
    queue_wait_ms: float
    status_code: int | None = None
    error_type: str | None = None
    error: str | None = None
    revision: int | None = None
    runner_id: str | None = None
    cold_start: bool = False
    cold_start_ms: float | None = None
    cold_breakdown: dict[str, float] | None = None

    @property
    def failed(self) -> bool:
        return is_error(self.status_code, self.error_type)

    def view(self) -> dict[str, Any]:
        out = asdict(self)
        out["failed"] = self.failed
        return out

    @classmethod
    def from_row(cls, row: Any) -> RequestRecord:
        m = row._mapping
        breakdown = m["cold_breakdown"]
        return cls(
            id=m["id"], owner=m["owner"], app=m["app"], endpoint=m["endpoint"],
            method=m["method"], kind=m["kind"], started_at=float(m["started_at"]),
            finished_at=float(m["finished_at"]), latency_ms=float(m["latency_ms"]),
            queue_wait_ms=float(m["queue_wait_ms"]), status_code=m["status_code"],
            error_type=m["error_type"], error=m["error"], revision=m["revision"],
            runner_id=m["runner_id"], cold_start=bool(m["cold_start"]),
            cold_start_ms=None if m["cold_start_ms"] is None else float(m["cold_start_ms"]),
            cold_breakdown=json.loads(breakdown) if breakdown else None,
        )  # fmt: skip


def is_error(status_code: int | None, error_type: str | None) -> bool:
    """Failed: no HTTP answer at all, a 4xx/5xx, or an error the platform named."""
    return status_code is None or status_code >= 400 or bool(error_type)


def cold_start_of(
    runner: Runner | None, arrived: float, acquired: float
) -> tuple[bool, float | None, dict[str, float] | None]:
    """Whether a request that arrived at `arrived` and got `runner` at `acquired` (wall
    clock) waited for that runner to start, how long, and where the time went."""
    if runner is None or runner.ready_at is None or runner.ready_at <= arrived:
        return False, None, None
    created = runner.created_at
    starting = runner.starting_at if runner.starting_at is not None else created
    ready = runner.ready_at
    end = max(acquired, ready)

    def span(a: float, b: float) -> float:
        return round(max(0.0, min(b, end) - max(a, arrived)) * 1000, 3)

    breakdown = {
        "scale_up": span(arrived, created),
        "pending": span(created, starting),
        "boot": span(starting, ready),
        "handoff": span(ready, end),
    }
    return True, round((end - arrived) * 1000, 3), breakdown


def error_message(body: bytes, status: int | None) -> str:
    """The message of an error answer: its JSON `detail`, else the start of its body."""
    try:
        detail = json.loads(body).get("detail", "")
    except (ValueError, AttributeError):
        detail = body[:500].decode("utf-8", "replace")
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    return detail or f"HTTP {status}"


# -- the recorder ---------------------------------------------------------------


class Recorder:
    """Buffers finished requests and writes them in batches, off the request path."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics | None = None,
        openapi_of: OpenAPIOf | None = None,
        runner_counts: RunnerCounts | None = None,
        retention_seconds: float = 7 * 24 * 3600,
        flush_seconds: float = 0.5,
    ) -> None:
        self.store = RecordStore(engine)
        self.metrics = metrics
        self.openapi_of = openapi_of
        self.runner_counts = runner_counts
        self.retention_seconds = retention_seconds
        self.flush_seconds = flush_seconds
        self._pending: list[RequestRecord] = []
        self._task: asyncio.Task[None] | None = None
        # Keyed by the document object itself, compared with `is`, not by id(): an id is
        # reused once its object is freed, and a new document could then hit stale entries.
        self._templates: dict[tuple[str, str], tuple[dict[str, Any], _Templates]] = {}
        # (owner, app, path) -> (the document, its template): most traffic repeats paths.
        self._matched: dict[tuple[str, str, str], tuple[dict[str, Any], str]] = {}
        self._last_sample: dict[tuple[str, str], tuple[float, tuple[int, ...]]] = {}
        self._last_prune = 0.0

    @classmethod
    def for_platform(cls, platform: Platform) -> Recorder:
        """The platform's recorder, fed by its gateway and queue, with /metrics' counters."""
        from tidal.observe.metrics import Metrics

        controller = platform.controller

        def openapi_of(owner: str, app: str) -> dict[str, Any] | None:
            dep = controller.deployments.get((owner, app))
            return dep.record.spec.openapi if dep is not None else None

        def live() -> dict[tuple[str, str], dict[str, int]]:
            return live_counts(controller)

        def counts() -> dict[tuple[str, str], tuple[int, int, int, int, int, int]]:
            return {
                key: _ZEROS if c is _AT_REST else (
                    c["pending"], c["starting"], c["ready"], c["draining"], c["in_flight"],
                    c["waiting"])
                for key, c in live_counts(controller).items()
            }  # fmt: skip

        recorder = cls(
            platform.engine,
            Metrics(live),
            openapi_of,
            counts,
            retention_seconds=platform.config.records_retention_seconds,
        )
        platform.gateway.recorder = recorder
        platform.queue.recorder = recorder
        return recorder

    def add(self, record: RequestRecord) -> None:
        """Hand over a finished request (the only cost on the request path)."""
        self._pending.append(record)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="request records")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
                now = time.time()
                if now - self._last_prune >= PRUNE_EVERY_SECONDS:
                    self._last_prune = now
                    removed = await asyncio.to_thread(
                        self.store.prune, now - self.retention_seconds
                    )
                    if removed:
                        log.info("request records: removed %d older than the retention", removed)
            except Exception:  # a database hiccup must not stop recording for good
                log.exception("writing request records failed")

    async def flush(self) -> None:
        """Write what was added since the last flush, and a runner-count sample.

        Under load a flush holds thousands of records. The Python work on them is done
        here in slices, yielding to the event loop between them (in a worker thread it
        would hold the GIL against the loop and stall every request for tens of ms);
        only the driver's insert, mostly C, goes to a thread."""
        batch, self._pending = self._pending, []
        samples = self._samples(time.time())
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(batch), FLUSH_SLICE):
            part = batch[start : start + FLUSH_SLICE]
            for record in part:
                record.endpoint = self._endpoint(record.owner, record.app, record.endpoint)
            if self.metrics is not None:
                self.metrics.observe_many(part)
            rows += map(row_of, part)
            await asyncio.sleep(0)
        if rows or samples:
            await asyncio.to_thread(self.store.write_rows, rows, samples)

    def _samples(self, now: float) -> list[tuple[str, str, float, tuple[int, ...]]]:
        if self.runner_counts is None:
            return []
        out: list[tuple[str, str, float, tuple[int, ...]]] = []
        counts = self.runner_counts()
        for key, current in counts.items():
            last = self._last_sample.get(key)
            if last is None or last[1] != current or now - last[0] >= SAMPLE_EVERY_SECONDS:
                self._last_sample[key] = (now, current)
                out.append((key[0], key[1], round(now, 3), current))
        for key in set(self._last_sample) - set(counts):  # deleted: one last zero sample
            del self._last_sample[key]
            out.append((key[0], key[1], round(now, 3), _ZEROS))
        return out

    def _endpoint(self, owner: str, app: str, path: str) -> str:
        """The OpenAPI path template `path` matches (`/items/{id}`), else `path`."""
        document = self.openapi_of(owner, app) if self.openapi_of else None
        if not document:
            return path[:256]
        known = self._matched.get((owner, app, path))
        if known is not None and known[0] is document:
            return known[1]
        cached = self._templates.get((owner, app))
        if cached is None or cached[0] is not document:
            cached = (document, compile_templates(document))
            self._templates[(owner, app)] = cached
        endpoint = match_template(cached[1], path)[:256]
        if len(self._matched) >= MATCHED_KEPT:  # paths with ids in them: don't grow forever
            self._matched.clear()
        self._matched[(owner, app, path)] = (document, endpoint)
        return endpoint


_AT_REST = {**dict.fromkeys(RUNNER_PHASE_NAMES, 0), "in_flight": 0, "waiting": 0}
_ZEROS = (0, 0, 0, 0, 0, 0)


def live_counts(controller: Controller) -> dict[tuple[str, str], dict[str, int]]:
    """Each deployed app's live runners by state, requests in flight and waiting."""
    now = time.monotonic()
    out = {}
    for key, dep in list(controller.deployments.items()):
        if not dep.runners and not dep.router.waits(now):
            # At rest, as most of a thousand apps are: it runs on the event loop twice a
            # second (the recorder's sample), so the common case costs a lookup.
            out[key] = _AT_REST
            continue
        counts = dict.fromkeys(RUNNER_PHASE_NAMES, 0)
        in_flight = 0
        for r in list(dep.runners.values()):
            phase = RUNNER_PHASES.get(r.state)
            if phase is not None:
                counts[phase] += 1
            in_flight += r.in_flight
        out[key] = {**counts, "in_flight": in_flight, "waiting": len(dep.router.waits(now))}
    return out


_Templates = list[tuple[re.Pattern[str], str]]


def compile_templates(document: dict[str, Any]) -> _Templates:
    out = []
    for template in document.get("paths", {}):
        if not isinstance(template, str):
            continue
        pattern = re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(template))
        out.append((re.compile(f"{pattern}/?"), template))
    return out


def match_template(templates: list[tuple[re.Pattern[str], str]], path: str) -> str:
    for pattern, template in templates:
        if pattern.fullmatch(path):
            return template
    return path


# -- storage ----------------------------------------------------------------------

_COLUMNS = (
    "id", "owner", "app", "endpoint", "method", "kind", "revision", "runner_id",
    "status_code", "error_type", "error", "started_at", "finished_at", "latency_ms",
    "queue_wait_ms", "cold_start", "cold_start_ms", "cold_breakdown",
)  # fmt: skip
_SAMPLE = text(
    "INSERT INTO runner_samples (owner, app, ts, pending, starting, ready, draining, "
    "in_flight, waiting) VALUES (:owner, :app, :ts, :pending, :starting, :ready, :draining, "
    ":in_flight, :waiting) ON CONFLICT (owner, app, ts) DO NOTHING"
)
_ERROR_SQL = "(status_code IS NULL OR status_code >= 400 OR error_type IS NOT NULL)"


class RecordStore:
    """The `request_records` and `runner_samples` tables (migration _v6)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def write(
        self,
        records: Sequence[RequestRecord],
        samples: Sequence[tuple[str, str, float, tuple[int, ...]]] = (),
    ) -> None:
        self.write_rows([row_of(r) for r in records], samples)

    def write_rows(
        self,
        rows: Sequence[tuple[Any, ...]],
        samples: Sequence[tuple[str, str, float, tuple[int, ...]]] = (),
    ) -> None:
        """Rows made by `row_of`. Mostly C (the driver's executemany, which lets go of
        the GIL while SQLite works): fit for a worker thread beside the event loop."""
        with self._engine.begin() as conn:
            if rows:
                # Straight to the driver's executemany, in this transaction: going
                # through SQLAlchemy cost ~15-30 µs a row with the GIL held, which
                # stalled the event loop (and every request on it) for 50-100 ms per
                # flush under load (bench/gateway_overhead.py's p99).
                mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
                cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                try:
                    cursor.executemany(
                        f"INSERT INTO request_records ({', '.join(_COLUMNS)}) VALUES "
                        f"({', '.join([mark] * len(_COLUMNS))}) ON CONFLICT (id) DO NOTHING",
                        rows,
                    )
                finally:
                    cursor.close()
            if samples:
                conn.execute(
                    _SAMPLE,
                    [
                        {"owner": o, "app": a, "ts": ts, "pending": c[0], "starting": c[1],
                         "ready": c[2], "draining": c[3], "in_flight": c[4], "waiting": c[5]}
                        for o, a, ts, c in samples
                    ],
                )  # fmt: skip

    def prune(self, before: float) -> int:
        with self._engine.begin() as conn:
            removed = conn.execute(
                text("DELETE FROM request_records WHERE started_at < :t"), {"t": before}
            ).rowcount
            conn.execute(text("DELETE FROM runner_samples WHERE ts < :t"), {"t": before})
        return int(removed or 0)

    def get(self, request_id: str) -> RequestRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                text("SELECT * FROM request_records WHERE id = :id"), {"id": request_id}
            ).first()
        return None if row is None else RequestRecord.from_row(row)

    def recent(
        self,
        owner: str | None = None,
        app: str | None = None,
        since: float = 0.0,
        errors_only: bool = False,
        limit: int = 100,
        endpoint: str | None = None,
    ) -> list[RequestRecord]:
        where, params = _where(owner, app, since, endpoint)
        if errors_only:
            where.append(_ERROR_SQL)
        params["limit"] = limit
        with self._engine.connect() as conn:
            rows = conn.execute(
                text(
                    f"SELECT * FROM request_records WHERE {' AND '.join(where)} "
                    "ORDER BY started_at DESC LIMIT :limit"
                ),
                params,
            ).all()
        return [RequestRecord.from_row(r) for r in rows]

    def counts(self, since: float) -> dict[tuple[str, str], tuple[int, int]]:
        """(owner, app) -> (requests, errors) since `since`: what the app list shows."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                text(
                    f"SELECT owner, app, count(*) AS n, sum(CASE WHEN {_ERROR_SQL} THEN 1 "
                    "ELSE 0 END) AS e FROM request_records WHERE started_at >= :since "
                    "GROUP BY owner, app"
                ),
                {"since": since},
            ).all()
        return {(r.owner, r.app): (int(r.n), int(r.e or 0)) for r in rows}

    def window(
        self,
        owner: str,
        app: str,
        since: float,
        until: float,
        bucket: int,
        endpoint: str | None = None,
        max_rows: int = MAX_ROWS,
    ) -> Window:
        """What analytics need over [since, until): exact counts per (bucket, endpoint),
        counted by the database, and the requests' points (all of them, or an even
        random sample of about `max_rows` when there are more)."""
        where, params = _where(owner, app, since, endpoint)
        where.append("started_at < :until")
        params.update(until=until, first=math.floor(since / bucket) * bucket, bucket=bucket)
        failed = (
            "CASE WHEN status_code IS NULL OR status_code >= 400 "
            "OR (error_type IS NOT NULL AND error_type <> '') THEN 1 ELSE 0 END"
        )
        with self._engine.connect() as conn:
            postgres = conn.dialect.name == "postgresql"
            # Truncation toward zero (started_at >= first): SQLite's CAST truncates,
            # PostgreSQL's rounds, hence floor() there.
            index = (
                "CAST(floor((started_at - :first) / :bucket) AS INTEGER)"
                if postgres
                else "CAST((started_at - :first) / :bucket AS INTEGER)"
            )
            counted = conn.execute(
                text(
                    f"SELECT {index} AS b, endpoint, count(*) AS n, sum({failed}) AS e, "
                    f"sum(cold_start) AS c FROM request_records WHERE {' AND '.join(where)} "
                    "GROUP BY b, endpoint"
                ),
                params,
            ).all()
            counts = {(int(r.b), str(r.endpoint)): (int(r.n), int(r.e or 0), int(r.c or 0))
                      for r in counted}  # fmt: skip
            total = sum(n for n, _, _ in counts.values())
            fraction = 1.0 if total <= max_rows else max_rows / total
            if fraction < 1.0:
                if postgres:
                    where.append("random() < :fraction")
                    params["fraction"] = fraction
                else:  # SQLite's random() is a 64-bit integer
                    where.append("(abs(random()) % 1000000) < :ppm")
                    params["ppm"] = int(fraction * 1_000_000)
            rows = conn.execute(
                text(
                    "SELECT started_at, endpoint, latency_ms, queue_wait_ms, status_code, "
                    "error_type, cold_start, cold_start_ms, cold_breakdown FROM "
                    f"request_records WHERE {' AND '.join(where)}"
                ),
                params,
            ).all()
        return Window(_points(rows), counts, fraction)

    def points(
        self, owner: str, app: str, since: float, until: float, endpoint: str | None = None
    ) -> list[Point]:
        """Every request's point in [since, until) (tests and small windows)."""
        return self.window(owner, app, since, until, 60, endpoint, max_rows=2**62).points

    def runner_series(
        self, owner: str, app: str, since: float, until: float
    ) -> list[dict[str, float]]:
        """Samples in the window, led by the last one before it (the state at `since`)."""
        with self._engine.connect() as conn:
            before = conn.execute(
                text(
                    "SELECT * FROM runner_samples WHERE owner = :o AND app = :a AND ts < :s "
                    "ORDER BY ts DESC LIMIT 1"
                ),
                {"o": owner, "a": app, "s": since},
            ).all()
            rows = conn.execute(
                text(
                    "SELECT * FROM runner_samples WHERE owner = :o AND app = :a AND ts >= :s "
                    "AND ts < :u ORDER BY ts LIMIT :limit"
                ),
                {"o": owner, "a": app, "s": since, "u": until, "limit": MAX_ROWS},
            ).all()
        out = []
        for r in [*before, *rows]:
            m = r._mapping
            out.append({"t": max(float(m["ts"]), since), **{k: int(m[k]) for k in (
                "pending", "starting", "ready", "draining", "in_flight", "waiting")}})  # fmt: skip
        return out


def _points(rows: Iterable[Any]) -> list[Point]:
    return [
        Point(
            float(r.started_at), r.endpoint, float(r.latency_ms), float(r.queue_wait_ms),
            is_error(r.status_code, r.error_type), bool(r.cold_start),
            None if r.cold_start_ms is None else float(r.cold_start_ms),
            json.loads(r.cold_breakdown) if r.cold_breakdown else None,
        )
        for r in rows
    ]  # fmt: skip


def _where(
    owner: str | None, app: str | None, since: float, endpoint: str | None
) -> tuple[list[str], dict[str, Any]]:
    where = ["started_at >= :since"]
    params: dict[str, Any] = {"since": since}
    if owner is not None:
        where.append("owner = :owner")
        params["owner"] = owner
    if app is not None:
        where.append("app = :app")
        params["app"] = app
    if endpoint is not None:
        where.append("endpoint = :endpoint")
        params["endpoint"] = endpoint
    return where, params


def row_of(r: RequestRecord) -> tuple[Any, ...]:
    """A record as the INSERT's values, in `_COLUMNS` order (a tuple, no dict: this
    runs for every request)."""
    return (
        r.id, r.owner, r.app, r.endpoint[:256], r.method[:16], r.kind, r.revision,
        r.runner_id, r.status_code, r.error_type[:128] if r.error_type else None,
        r.error[:ERROR_TEXT_LIMIT] if r.error else None, r.started_at, r.finished_at,
        round(r.latency_ms, 3), round(r.queue_wait_ms, 3), int(r.cold_start),
        r.cold_start_ms, json.dumps(r.cold_breakdown) if r.cold_breakdown else None,
    )  # fmt: skip


# -- aggregation (pure) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Point:
    """What the charts need of one request."""

    t: float
    endpoint: str
    latency_ms: float
    queue_wait_ms: float
    failed: bool
    cold_start: bool = False
    cold_start_ms: float | None = None
    cold_breakdown: dict[str, float] | None = None


# (requests, errors, cold starts) per (bucket index, endpoint), counted exactly.
Counts = dict[tuple[int, str], tuple[int, int, int]]


@dataclass
class Window:
    points: list[Point]
    counts: Counts
    fraction: float  # of the window's requests in `points` (1.0: all of them)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between closest ranks (numpy's
    default); None for no values. `values` must be sorted."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    rank = (len(values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return float(values[low] + (values[high] - values[low]) * (rank - low))


@dataclass
class Stats:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    def add(self, p: Point) -> None:
        self.requests += 1
        self.errors += p.failed
        self.latencies.append(p.latency_ms)
        self.waits.append(p.queue_wait_ms)
        if p.cold_start:
            self.cold.append(p.cold_start_ms or 0.0)
            for phase, ms in (p.cold_breakdown or {}).items():
                if phase in self.phases:
                    self.phases[phase] += ms

    def view(self, counted: tuple[int, int, int] | None = None) -> dict[str, Any]:
        """`counted`: exact (requests, errors, cold starts) when the points are a sample."""
        lat, wait, cold = sorted(self.latencies), sorted(self.waits), sorted(self.cold)
        requests, errors, colds = counted or (self.requests, self.errors, len(cold))

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 2)

        return {
            "requests": requests,
            "errors": errors,
            "error_rate": round(errors / requests, 4) if requests else 0.0,
            "latency_ms": {f"p{q}": r(percentile(lat, q)) for q in (50, 95, 99)},
            "queue_wait_ms": {f"p{q}": r(percentile(wait, q)) for q in (50, 95, 99)},
            "cold_starts": colds,
            "cold_start_ms": {f"p{q}": r(percentile(cold, q)) for q in (50, 95)},
            # Mean time per phase over the cold starts (their sum is the mean cold start).
            "cold_start_breakdown_ms": {
                k: round(v / len(cold), 2) if cold else 0.0 for k, v in self.phases.items()
            },
        }


def bucket_seconds_for(window: float, target: int = 60) -> int:
    """A round bucket width giving about `target` buckets over `window` seconds."""
    for width in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400):
        if window / width <= target:
            return width
    return 86400


def _sum(counts: Iterable[tuple[int, int, int]]) -> tuple[int, int, int]:
    n = e = c = 0
    for a, b, d in counts:
        n, e, c = n + a, e + b, c + d
    return n, e, c


def aggregate(
    points: Iterable[Point],
    since: float,
    until: float,
    bucket: int,
    counts: Counts | None = None,
    fraction: float = 1.0,
) -> dict[str, Any]:
    """Totals, per-endpoint stats and a time series of `bucket`-second buckets (aligned
    to multiples of `bucket`, covering [since, until)): requests, errors, latency and
    queue-wait percentiles, cold starts. With `counts` (exact, from the database), the
    numbers of requests, errors and cold starts come from them and `points` may be a
    sample (`fraction` of the requests) that only the percentiles are taken from."""
    bucket = max(1, int(bucket))
    first = math.floor(since / bucket) * bucket
    count = max(1, math.ceil((until - first) / bucket))
    series = [Stats() for _ in range(count)]
    total = Stats()
    by_endpoint: dict[str, Stats] = {}
    for p in points:
        if not since <= p.t < until:
            continue
        total.add(p)
        by_endpoint.setdefault(p.endpoint, Stats()).add(p)
        series[min(count - 1, int((p.t - first) // bucket))].add(p)
    per_bucket: list[tuple[int, int, int] | None] = [None] * count
    per_endpoint: dict[str, tuple[int, int, int]] = {}
    if counts is not None:
        for (i, name), c in counts.items():
            i = min(count - 1, max(0, i))
            per_bucket[i] = _sum([per_bucket[i] or (0, 0, 0), c])
            per_endpoint[name] = _sum([per_endpoint.get(name, (0, 0, 0)), c])
            by_endpoint.setdefault(name, Stats())
        per_bucket = [c or (0, 0, 0) for c in per_bucket]
    buckets = []
    for i, s in enumerate(series):
        v = s.view(per_bucket[i])
        buckets.append({
            "t": first + i * bucket, "requests": v["requests"], "errors": v["errors"],
            "latency_ms": v["latency_ms"], "queue_wait_ms": v["queue_wait_ms"],
            "cold_starts": v["cold_starts"],
        })  # fmt: skip
    endpoints = sorted(
        ({"endpoint": name, **stats.view(per_endpoint.get(name))}
         for name, stats in by_endpoint.items()),
        key=lambda e: -e["requests"],
    )  # fmt: skip
    totals = total.view(_sum(per_endpoint.values()) if counts is not None else None)
    return {
        "since": since, "until": until, "bucket_seconds": bucket, "totals": totals,
        "endpoints": endpoints, "series": buckets,
        # Below 1: percentiles are from a random sample of this fraction of the requests.
        "sampled": round(fraction, 6),
    }  # fmt: skip


_HEX_ID = re.compile(r"\b[0-9a-f]{8,}\b")
_NUMBER = re.compile(r"(?<![A-Za-z_])\d+(\.\d+)?")


def message_key(message: str | None) -> str:
    """An error message with what varies between occurrences (ids, numbers) masked, so
    that the same failure groups together."""
    if not message:
        return ""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return _NUMBER.sub("N", _HEX_ID.sub("<id>", first))[:300]


def group_errors(records: Iterable[RequestRecord], samples: int = 5) -> list[dict[str, Any]]:
    """Failed requests grouped by app, error type and message (masked), most frequent
    first; each group with its count, first and last time, and recent request ids."""
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for r in records:
        if not r.failed:
            continue
        error_type = r.error_type or (f"http_{r.status_code}" if r.status_code else "error")
        key = (r.owner, r.app, error_type, message_key(r.error))
        group = groups.get(key)
        if group is None:
            group = groups[key] = {
                "owner": r.owner, "app": r.app, "error_type": error_type,
                "message": (r.error or "").strip()[:500], "count": 0, "endpoints": [],
                "status_codes": [], "first_seen": r.started_at, "last_seen": r.started_at,
                "request_ids": [],
            }  # fmt: skip
        group["count"] += 1
        group["first_seen"] = min(group["first_seen"], r.started_at)
        if r.started_at >= group["last_seen"]:
            group["last_seen"] = r.started_at
            group["message"] = (r.error or "").strip()[:500]
        if r.endpoint not in group["endpoints"]:
            group["endpoints"].append(r.endpoint)
        if r.status_code not in group["status_codes"]:
            group["status_codes"].append(r.status_code)
        group["request_ids"].append((r.started_at, r.id))
    out = sorted(groups.values(), key=lambda g: (-g["count"], -g["last_seen"]))
    for g in out:
        g["request_ids"] = [i for _, i in sorted(g["request_ids"], reverse=True)[:samples]]
    return out


_TRACEBACK_START = "Traceback (most recent call last):"
_CHAINED = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)


def traceback_of(lines: Sequence[str]) -> str | None:
    """The (last) Python traceback in a request's log lines, chained ones included."""
    start = None
    for i, line in enumerate(lines):
        if line.strip().startswith(_TRACEBACK_START) and not _continues_chain(lines, i):
            start = i
    if start is None:
        return None
    out: list[str] = []
    i = start
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        out.append(line)
        if (
            i > start
            and line[:1] not in (" ", "\t", "")
            and not stripped.startswith((_TRACEBACK_START, *_CHAINED))
        ):
            # The exception line ends it, unless a chained traceback follows.
            nxt = next((lines[j].strip() for j in range(i + 1, len(lines)) if lines[j].strip()),
                       "")  # fmt: skip
            if nxt not in _CHAINED:
                break
        i += 1
    return "\n".join(out)


def _continues_chain(lines: Sequence[str], i: int) -> bool:
    """Whether the traceback starting at line i follows a "During handling..." line."""
    for j in range(i - 1, -1, -1):
        if lines[j].strip():
            return lines[j].strip() in _CHAINED
    return False
