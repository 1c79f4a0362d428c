"""/metrics' text: Prometheus' exposition format, from the same records as analytics."""

from __future__ import annotations

import re

from tidal.observe.metrics import MAX_ENDPOINTS, Metrics
from tidal.observe.records import RequestRecord

SAMPLE = re.compile(
    r'^[a-z_:][a-z0-9_:]*(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? (-?[0-9.e+]+|NaN|\+Inf)$'
)


def rec(i: int, latency: float, **kw: object) -> RequestRecord:
    base: dict[str, object] = {
        "id": str(i), "owner": "local", "app": "a", "endpoint": "/run", "method": "POST",
        "kind": "queue", "started_at": 1000.0 + i, "finished_at": 1000.0 + i,
        "latency_ms": latency, "queue_wait_ms": 1.0, "status_code": 200,
    }  # fmt: skip
    base.update(kw)
    return RequestRecord(**base)  # type: ignore[arg-type]


def test_metrics_are_valid_exposition_text_with_the_same_numbers() -> None:
    live = {("local", "a"): {"ready": 2, "starting": 1, "pending": 0, "draining": 0,
                             "in_flight": 3, "waiting": 4}}  # fmt: skip
    m = Metrics(lambda: live)
    for i, latency in enumerate([10.0, 20.0, 30.0, 40.0]):
        m.observe(rec(i, latency))
    m.observe(rec(9, 5000.0, status_code=500, error_type="ValueError", cold_start=True,
                  cold_start_ms=1200.0, cold_breakdown={"boot": 1000.0, "handoff": 200.0}))  # fmt: skip
    text = m.render(now=1010.0)
    for line in text.splitlines():
        assert line.startswith("#") or SAMPLE.match(line), line
    assert 'tidal_requests_total{owner="local",app="a",endpoint="/run",status="200"} 4' in text
    assert 'tidal_requests_total{owner="local",app="a",endpoint="/run",status="500"} 1' in text
    assert (
        'tidal_request_errors_total{owner="local",app="a",endpoint="/run",error_type="ValueError"} 1'
        in text
    )
    # Histogram buckets are cumulative and end with +Inf = count.
    assert (
        'tidal_request_duration_seconds_bucket{owner="local",app="a",endpoint="/run",le="0.01"} 1'
        in text
    )
    assert (
        'tidal_request_duration_seconds_bucket{owner="local",app="a",endpoint="/run",le="+Inf"} 5'
        in text
    )
    assert 'tidal_request_duration_seconds_count{owner="local",app="a",endpoint="/run"} 5' in text
    # The summary's median is the analytics' p50 of the same five latencies (30 ms).
    assert (
        'tidal_request_latency_seconds{owner="local",app="a",endpoint="/run",quantile="0.5"} 0.03'
        in text
    )
    assert 'tidal_cold_start_phase_seconds_total{owner="local",app="a",phase="boot"} 1' in text
    assert 'tidal_runners{owner="local",app="a",state="ready"} 2' in text
    assert 'tidal_requests_waiting{owner="local",app="a"} 4' in text
    # Outside the summary's window, its quantiles are NaN; the counters stay.
    later = m.render(now=1010.0 + 3600)
    assert 'quantile="0.5"} NaN' in later
    assert 'tidal_requests_total{owner="local",app="a",endpoint="/run",status="200"} 4' in later


def test_endpoint_labels_are_bounded() -> None:
    m = Metrics()
    for i in range(MAX_ENDPOINTS + 10):
        m.observe(rec(i, 1.0, endpoint=f"/p/{i}"))
    text = m.render()
    assert 'endpoint="(other)",status="200"} 10' in text
    assert 'endpoint="/p/' + str(MAX_ENDPOINTS + 5) + '"' not in text


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.observe(rec(1, 1.0, endpoint='/a"b\\c'))
    assert 'endpoint="/a\\"b\\\\c"' in m.render()
