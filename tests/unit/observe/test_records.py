"""Request records: the pure aggregation (percentiles, buckets, error groups, tracebacks,
cold-start breakdowns), and the store on both SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

import tidal.observe.records as records_module
from tidal.backends.base import Runner
from tidal.control.db import open_database
from tidal.observe.metrics import Metrics
from tidal.observe.records import (
    Point,
    Recorder,
    RecordStore,
    RequestRecord,
    aggregate,
    bucket_seconds_for,
    cold_start_of,
    compile_templates,
    group_errors,
    match_template,
    message_key,
    percentile,
    traceback_of,
)


def record(i: int, t: float, **kw: object) -> RequestRecord:
    base: dict[str, object] = {
        "id": f"{i:032x}", "owner": "local", "app": "app", "endpoint": "/run", "method": "POST",
        "kind": "sync", "started_at": t, "finished_at": t + 0.1, "latency_ms": 100.0,
        "queue_wait_ms": 5.0, "status_code": 200,
    }  # fmt: skip
    base.update(kw)
    return RequestRecord(**base)  # type: ignore[arg-type]


def test_percentiles_interpolate_between_ranks() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 40.0
    assert percentile(values, 50) == 25.0
    assert percentile(values, 95) == pytest.approx(38.5)
    hundred = [float(i) for i in range(1, 101)]
    assert percentile(hundred, 99) == pytest.approx(99.01)


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200), st.floats(0, 100))
def test_a_percentile_lies_within_the_values(values: list[float], q: float) -> None:
    values.sort()
    p = percentile(values, q)
    assert p is not None and values[0] <= p <= values[-1]
    assert percentile(values, 50) <= percentile(values, 95) <= percentile(values, 99)  # type: ignore[operator]


def test_buckets_count_requests_errors_and_latency_per_endpoint() -> None:
    since = 1_000.0
    points = [
        Point(1_001.0, "/a", 10.0, 1.0, False),
        Point(1_002.0, "/a", 30.0, 3.0, True),
        Point(1_011.0, "/b", 50.0, 5.0, False, True, 400.0,
              {"scale_up": 0.0, "pending": 100.0, "boot": 280.0, "handoff": 20.0}),
        Point(999.0, "/a", 1e6, 0.0, False),  # before the window: left out
    ]  # fmt: skip
    out = aggregate(points, since, 1_030.0, 10)
    assert [b["t"] for b in out["series"]] == [1_000.0, 1_010.0, 1_020.0]
    assert [b["requests"] for b in out["series"]] == [2, 1, 0]
    assert [b["errors"] for b in out["series"]] == [1, 0, 0]
    assert out["series"][0]["latency_ms"]["p50"] == 20.0
    assert out["series"][2]["latency_ms"]["p50"] is None
    totals = out["totals"]
    assert totals["requests"] == 3 and totals["errors"] == 1
    assert totals["error_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert totals["latency_ms"]["p50"] == 30.0 and totals["latency_ms"]["p99"] == pytest.approx(
        49.6
    )
    assert totals["cold_starts"] == 1 and totals["cold_start_ms"]["p50"] == 400.0
    assert totals["cold_start_breakdown_ms"] == {
        "scale_up": 0.0, "pending": 100.0, "boot": 280.0, "handoff": 20.0
    }  # fmt: skip
    by = {e["endpoint"]: e for e in out["endpoints"]}
    assert by["/a"]["requests"] == 2 and by["/a"]["errors"] == 1 and by["/b"]["cold_starts"] == 1
    assert out["endpoints"][0]["endpoint"] == "/a"  # the busiest first


def test_bucket_width_gives_about_sixty_buckets() -> None:
    assert bucket_seconds_for(900) == 15
    assert bucket_seconds_for(3600) == 60
    assert bucket_seconds_for(24 * 3600) == 1800
    assert bucket_seconds_for(10) == 1


def test_errors_group_by_type_and_message_with_ids_masked() -> None:
    now = 5_000.0
    records = [
        record(
            1, now, status_code=500, error_type="ValueError", error="bad input 42 in abcdef0123"
        ),
        record(
            2, now + 1, status_code=500, error_type="ValueError", error="bad input 7 in 99887766aa"
        ),
        record(3, now + 2, status_code=504, error_type="request_timeout", error="too slow"),
        record(4, now + 3),  # succeeded: not an error
        record(5, now + 4, status_code=422, error=None, error_type=None, endpoint="/other"),
    ]
    groups = group_errors(records)
    assert [(g["error_type"], g["count"]) for g in groups] == [
        ("ValueError", 2), ("http_422", 1), ("request_timeout", 1)
    ]  # fmt: skip
    first = groups[0]
    assert first["message"] == "bad input 7 in 99887766aa"  # the latest
    assert first["request_ids"] == [f"{2:032x}", f"{1:032x}"]
    assert first["first_seen"] == now and first["last_seen"] == now + 1
    assert message_key("bad input 42 in abcdef0123") == "bad input N in <id>"


def test_the_traceback_is_found_in_a_requests_log_lines() -> None:
    lines = [
        "about to fail",
        "tidal: POST /fail failed:",
        "Traceback (most recent call last):",
        '  File "app.py", line 3, in handler',
        "    inner()",
        "KeyError: 'x'",
        "During handling of the above exception, another exception occurred:",
        "Traceback (most recent call last):",
        '  File "app.py", line 9, in handler',
        "    raise RuntimeError('broke')",
        "RuntimeError: broke",
        "a later line",
    ]
    found = traceback_of(lines)
    assert found is not None
    assert found.splitlines()[0] == "Traceback (most recent call last):"
    assert found.splitlines()[-1] == "RuntimeError: broke"
    assert "KeyError: 'x'" in found  # the chain is kept
    assert traceback_of(["nothing to see"]) is None


def test_a_cold_start_splits_into_phases() -> None:
    runner = Runner(id="r-1", app="a", revision=1, backend="local", log_path=Path("x"))
    runner.created_at, runner.starting_at, runner.ready_at = 101.0, 101.5, 103.0
    cold, total, phases = cold_start_of(runner, arrived=100.0, acquired=103.25)
    assert cold and total == 3250.0
    assert phases == {"scale_up": 1000.0, "pending": 500.0, "boot": 1500.0, "handoff": 250.0}
    # A runner ready before the request arrived: warm.
    assert cold_start_of(runner, arrived=104.0, acquired=104.0) == (False, None, None)
    # Wanted before this request arrived (by an earlier one): only the rest counts.
    cold, total, phases = cold_start_of(runner, arrived=102.0, acquired=103.0)
    assert cold and total == 1000.0 and phases == {
        "scale_up": 0.0, "pending": 0.0, "boot": 1000.0, "handoff": 0.0
    }  # fmt: skip


def test_paths_map_to_their_openapi_templates() -> None:
    templates = compile_templates({"paths": {"/items/{item_id}": {}, "/run": {}}})
    assert match_template(templates, "/items/42") == "/items/{item_id}"
    assert match_template(templates, "/run") == "/run"
    assert match_template(templates, "/items/42/more") == "/items/42/more"


def test_the_store_writes_reads_and_prunes(engine: Engine) -> None:
    store = RecordStore(engine)
    now = time.time()
    failing = record(2, now - 5, status_code=500, error_type="ValueError", error="boom",
                     cold_start=True, cold_start_ms=300.0, cold_breakdown={"boot": 300.0})  # fmt: skip
    store.write(
        [record(1, now - 10), failing, record(3, now - 10_000)],
        [("local", "app", now - 20, (0, 1, 0, 0, 0, 1)), ("local", "app", now - 2, (0, 0, 1, 0, 1, 0))],
    )  # fmt: skip
    store.write([record(1, now - 10)])  # written twice: kept once
    got = store.get(failing.id)
    assert got is not None and got.cold_breakdown == {"boot": 300.0} and got.failed
    assert [r.id for r in store.recent(since=now - 60)] == [failing.id, record(1, 0).id]
    assert [r.id for r in store.recent(since=0, errors_only=True)] == [failing.id]
    assert store.counts(now - 60) == {("local", "app"): (2, 1)}
    points = store.points("local", "app", now - 60, now + 1)
    assert sorted(p.failed for p in points) == [False, True]
    series = store.runner_series("local", "app", now - 10, now + 1)
    assert [s["ready"] for s in series] == [0, 1]  # the state at the start, then the change
    assert series[0]["t"] == now - 10 and series[0]["starting"] == 1
    assert store.prune(now - 3600) == 1
    assert store.get(record(3, 0).id) is None


def test_counts_stay_exact_when_percentiles_come_from_a_sample(engine: Engine) -> None:
    store = RecordStore(engine)
    since = 1_000_000.0  # aligned to 10 s buckets
    records = []
    for i in range(3000):  # 2000 on /a, 1000 on /b (every third fails), over 30 s
        endpoint = "/b" if i % 3 == 2 else "/a"
        failed = endpoint == "/b"
        records.append(record(i, since + i * 0.01, endpoint=endpoint,
                              latency_ms=float(i % 100), cold_start=i % 500 == 0,
                              status_code=500 if failed else 200,
                              error_type="E" if failed else None))  # fmt: skip
    store.write(records)
    whole = store.window("local", "app", since, since + 30, 10)
    assert whole.fraction == 1.0 and len(whole.points) == 3000
    found = store.window("local", "app", since, since + 30, 10, max_rows=600)
    assert found.fraction == pytest.approx(0.2)
    assert 300 < len(found.points) < 900  # a random sample of about 600
    out = aggregate(found.points, since, since + 30, 10, found.counts, found.fraction)
    exact = aggregate(whole.points, since, since + 30, 10)
    for key in ("requests", "errors", "error_rate", "cold_starts"):
        assert out["totals"][key] == exact["totals"][key], key
    assert out["totals"]["requests"] == 3000 and out["totals"]["errors"] == 1000
    assert [b["requests"] for b in out["series"]] == [1000, 1000, 1000]
    assert [b["requests"] for b in exact["series"]] == [1000, 1000, 1000]
    by = {e["endpoint"]: e for e in out["endpoints"]}
    assert (by["/a"]["requests"], by["/b"]["requests"], by["/b"]["errors"]) == (2000, 1000, 1000)
    assert out["sampled"] == pytest.approx(0.2) and exact["sampled"] == 1.0
    assert 30 <= out["totals"]["latency_ms"]["p50"] <= 70  # uniform 0..99: about 49.5
    # One endpoint only, and the window's edge respected.
    only_b = store.window("local", "app", since + 10, since + 20, 10, endpoint="/b")
    assert sum(n for n, _, _ in only_b.counts.values()) == 333
    assert all(p.endpoint == "/b" and since + 10 <= p.t < since + 20 for p in only_b.points)


def test_the_recorder_batches_off_the_request_path(tmp_path: Path) -> None:
    engine = open_database(tmp_path / "tidal.db")
    metrics = Metrics()
    document = {"paths": {"/items/{id}": {}}}
    recorder = Recorder(engine, metrics, openapi_of=lambda o, a: document)

    async def go() -> None:
        recorder.start()
        recorder.add(record(1, time.time(), endpoint="/items/7"))
        assert recorder.store.get(record(1, 0).id) is None  # not written on the request path
        await asyncio.sleep(recorder.flush_seconds * 3)
        stored = recorder.store.get(record(1, 0).id)
        assert stored is not None and stored.endpoint == "/items/{id}"
        recorder.add(record(2, time.time(), status_code=503, error_type="startup_failed"))
        await recorder.close()  # flushes what is left

    asyncio.run(go())
    assert recorder.store.get(record(2, 0).id) is not None
    text = metrics.render()
    assert (
        'tidal_requests_total{owner="local",app="app",endpoint="/items/{id}",status="200"} 1'
        in text
    )
    assert (
        'tidal_request_errors_total{owner="local",app="app",endpoint="/run",error_type="startup_failed"} 1'
        in text
    )
    engine.dispose()


def test_endpoint_templates_follow_a_new_document_even_at_a_reused_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CPython reuses a freed object's address (its id()) for a new one: here every object
    # has one id, as a redeploy's document made where the old one lived would.
    monkeypatch.setattr(records_module, "id", lambda obj: 1, raising=False)
    engine = open_database(tmp_path / "tidal.db")
    current: dict[str, object] = {"paths": {"/items/{id}": {}}}
    recorder = Recorder(engine, Metrics(), openapi_of=lambda o, a: current)
    assert recorder._endpoint("local", "app", "/items/7") == "/items/{id}"
    current = {"paths": {"/users/{name}": {}}}
    assert recorder._endpoint("local", "app", "/users/ann") == "/users/{name}"
    assert recorder._endpoint("local", "app", "/items/7") == "/items/7"
    engine.dispose()
