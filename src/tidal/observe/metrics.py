"""Prometheus metrics at `/metrics` (text exposition format 0.0.4), from the same request
records as the dashboard's analytics (tidal.observe.records) and the live runner state.

Counters and histograms count from the platform's start (Prometheus' own convention: a
restart resets them, and `rate()` copes). The `tidal_request_latency_seconds` summary
gives p50/p95/p99 over the last `window_seconds` (5 minutes), the numbers the dashboard
shows for the same window. Endpoint labels are the OpenAPI path templates; past
`MAX_ENDPOINTS` distinct paths for one app (a direct server without an OpenAPI document
that serves arbitrary paths) the rest count under `endpoint="(other)"`.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tidal import __version__
from tidal.observe.records import PHASES, percentile

if TYPE_CHECKING:
    from tidal.observe.records import RequestRecord

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)  # fmt: skip
MAX_ENDPOINTS = 50
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (owner, app) -> {state: count} plus "in_flight" and "waiting" (live, read at scrape time).
LiveState = Callable[[], "dict[tuple[str, str], dict[str, int]]"]


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1


class Metrics:
    """In-memory counters, fed by Recorder.flush (off the request path)."""

    def __init__(self, live: LiveState | None = None, window_seconds: float = 300.0) -> None:
        self.live = live
        self.window_seconds = window_seconds
        self.requests: dict[tuple[str, str, str, str], int] = {}
        self.errors: dict[tuple[str, str, str, str], int] = {}
        self.latency: dict[tuple[str, str, str], _Histogram] = {}
        self.queue_wait: dict[tuple[str, str, str], _Histogram] = {}
        self.cold: dict[tuple[str, str], _Histogram] = {}
        self.cold_phases: dict[tuple[str, str, str], float] = {}
        self.recent: dict[tuple[str, str, str], deque[tuple[float, float]]] = {}
        self._endpoints: dict[tuple[str, str], set[str]] = {}
        # The recorder's worker thread observes while the event loop renders.
        self._lock = threading.Lock()

    def observe_many(self, records: Sequence[RequestRecord]) -> None:
        """Observe a batch, a slice at a time: /metrics never waits for a whole batch."""
        for start in range(0, len(records), 256):
            with self._lock:
                for r in records[start : start + 256]:
                    self.observe(r)

    def _label(self, owner: str, app: str, endpoint: str) -> str:
        seen = self._endpoints.setdefault((owner, app), set())
        if endpoint in seen:
            return endpoint
        if len(seen) >= MAX_ENDPOINTS:
            return "(other)"
        seen.add(endpoint)
        return endpoint

    def observe(self, r: RequestRecord) -> None:
        ep = self._label(r.owner, r.app, r.endpoint)
        status = str(r.status_code) if r.status_code is not None else "none"
        key = (r.owner, r.app, ep, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if r.failed:
            error_type = r.error_type or f"http_{r.status_code}"
            ekey = (r.owner, r.app, ep, error_type)
            self.errors[ekey] = self.errors.get(ekey, 0) + 1
        hkey = (r.owner, r.app, ep)
        self.latency.setdefault(hkey, _Histogram()).observe(r.latency_ms / 1000)
        self.queue_wait.setdefault(hkey, _Histogram()).observe(r.queue_wait_ms / 1000)
        self.recent.setdefault(hkey, deque()).append((r.finished_at, r.latency_ms / 1000))
        if r.cold_start:
            self.cold.setdefault((r.owner, r.app), _Histogram()).observe(
                (r.cold_start_ms or 0.0) / 1000
            )
            for phase, ms in (r.cold_breakdown or {}).items():
                pkey = (r.owner, r.app, phase)
                self.cold_phases[pkey] = self.cold_phases.get(pkey, 0.0) + ms / 1000

    def render(self, now: float | None = None) -> str:
        with self._lock:
            return self._render(time.time() if now is None else now)

    def _render(self, now: float) -> str:
        out: list[str] = []
        out += _family("tidal_build_info", "gauge", "The platform's version.",
                       [({"version": __version__}, 1)])  # fmt: skip
        out += _family(
            "tidal_requests_total", "counter",
            "Requests answered, by app, endpoint and HTTP status (none: no HTTP answer).",
            [(_labels(o, a, e, status=s), n) for (o, a, e, s), n in sorted(self.requests.items())],
        )  # fmt: skip
        out += _family(
            "tidal_request_errors_total", "counter",
            "Failed requests (4xx, 5xx or no answer), by error type.",
            [(_labels(o, a, e, error_type=t), n) for (o, a, e, t), n in sorted(self.errors.items())],
        )  # fmt: skip
        out += _histogram("tidal_request_duration_seconds",
                          "Request latency, arrival to last byte (queued: submission to result).",
                          {k: v for k, v in self.latency.items()})  # fmt: skip
        out += _histogram("tidal_request_queue_wait_seconds",
                          "Time a request waited for a runner slot.", self.queue_wait)  # fmt: skip
        rows: list[tuple[dict[str, str], float]] = []
        cutoff = now - self.window_seconds
        for (o, a, e), window in sorted(self.recent.items()):
            while window and window[0][0] < cutoff:
                window.popleft()
            values = sorted(v for _, v in window)
            for q in (50, 95, 99):
                value = percentile(values, q)
                rows.append((_labels(o, a, e, quantile=str(q / 100)),
                             float("nan") if value is None else value))  # fmt: skip
            rows.append(({**_labels(o, a, e), "__suffix": "_count"}, len(values)))
            rows.append(({**_labels(o, a, e), "__suffix": "_sum"}, sum(values)))
        out += _family(
            "tidal_request_latency_seconds", "summary",
            f"Request latency quantiles over the last {self.window_seconds:g} seconds.", rows,
        )  # fmt: skip
        out += _histogram("tidal_cold_start_seconds",
                          "How long requests served by a runner that started for them waited.",
                          {(o, a, ""): h for (o, a), h in self.cold.items()})  # fmt: skip
        out += _family(
            "tidal_cold_start_phase_seconds_total", "counter",
            "Cold-start wait by phase: " + ", ".join(PHASES) + ".",
            [(_labels(o, a, phase=p), round(v, 6)) for (o, a, p), v in sorted(self.cold_phases.items())],
        )  # fmt: skip
        live = self.live() if self.live else {}
        runner_rows, flight_rows, wait_rows = [], [], []
        for (o, a), counts in sorted(live.items()):
            for state in ("pending", "starting", "ready", "draining"):
                runner_rows.append((_labels(o, a, state=state), counts.get(state, 0)))
            flight_rows.append((_labels(o, a), counts.get("in_flight", 0)))
            wait_rows.append((_labels(o, a), counts.get("waiting", 0)))
        out += _family("tidal_runners", "gauge", "Live runners by state.", runner_rows)
        out += _family("tidal_requests_in_flight", "gauge",
                       "Requests being served by runners now.", flight_rows)  # fmt: skip
        out += _family("tidal_requests_waiting", "gauge",
                       "Requests waiting at the gateway for a runner slot now.", wait_rows)  # fmt: skip
        return "\n".join(out) + "\n"


def _labels(owner: str, app: str, endpoint: str | None = None, **more: str) -> dict[str, str]:
    labels = {"owner": owner, "app": app}
    if endpoint:
        labels["endpoint"] = endpoint
    labels.update(more)
    return labels


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    suffix = labels.pop("__suffix", "")
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return (
        f"{name}{suffix}{{{inner}}} {_number(value)}"
        if inner
        else f"{name}{suffix} {_number(value)}"
    )


def _number(value: float) -> str:
    if value != value:  # NaN
        return "NaN"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _family(
    name: str, kind: str, help_text: str, rows: Iterable[tuple[dict[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [_sample(name, dict(labels), value) for labels, value in rows]
    return lines


def _histogram(
    name: str, help_text: str, histograms: dict[tuple[str, str, str], _Histogram]
) -> list[str]:
    rows: list[tuple[dict[str, str], float]] = []
    for (o, a, e), h in sorted(histograms.items()):
        base = _labels(o, a, e)
        running = 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), h.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else _number(bound)
            rows.append(({**base, "le": le, "__suffix": "_bucket"}, running))
        rows.append(({**base, "__suffix": "_sum"}, round(h.total, 6)))
        rows.append(({**base, "__suffix": "_count"}, h.n))
    return _family(name, "histogram", help_text, rows)
