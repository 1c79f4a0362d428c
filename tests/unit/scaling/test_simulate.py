"""The trace simulator: `simulate(trace, options)` replays requests against the live
controller and router on virtual time.

Small traces have hand-computed answers (cold start 5 s and tick 0.5 s unless a
test says otherwise; the app is deployed at t=0). Property tests check invariants
and that the fast path (a tick runs only when the policy's inputs can differ) gives
the same results as running every tick.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tidal.scaling.controller
import tidal.scaling.policy
import tidal.scaling.simulate
from tidal.scaling.policy import Decision
from tidal.scaling.simulate import SimResult, Trace, TraceError, parse_trace, percentile, simulate
from tidal.spec import AppOptions


def _sim(requests: list[tuple[float, float]], **kw: Any) -> SimResult:
    sim_kw = {k: kw.pop(k) for k in ("cold_start", "tick", "max_waiting") if k in kw}
    return simulate(Trace.of(requests), AppOptions(**kw), **sim_kw)


def test_the_simulator_runs_the_live_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every decision comes from the platform's Controller.reconcile (no copy of it here).
    assert "decide" not in tidal.scaling.simulate.__dict__
    decisions: list[Decision] = []

    def spy(*args: Any, **kwargs: Any) -> Decision:
        decision = tidal.scaling.policy.decide(*args, **kwargs)
        decisions.append(decision)
        return decision

    monkeypatch.setattr(tidal.scaling.controller, "decide", spy)
    r = _sim([(0, 1), (30, 1)], keep_alive=0)
    assert len(decisions) == r.policy_calls > 0
    assert sum(d.start for d in decisions) == r.cold_starts == 2
    assert sum(len(d.stop) for d in decisions) == 2  # each stopped after its request


# -- reading traces -------------------------------------------------------------------


def test_trace_with_header_and_without() -> None:
    with_header = parse_trace(["arrival,duration\n", "0,1.5\n", "2.5,0.25\n"])
    assert with_header == Trace((0.0, 2.5), (1.5, 0.25))
    assert parse_trace(["0,1.5", "2.5,0.25"]) == with_header


def test_trace_header_names_columns_in_any_order_among_others() -> None:
    trace = parse_trace(["id, Duration ,arrival", "a,2,1", "b,3,0"])
    assert trace == Trace((0.0, 1.0), (3.0, 2.0))  # sorted by arrival


def test_trace_skips_blank_and_comment_lines_and_sorts_stably() -> None:
    trace = parse_trace(["# from prod, 1 hour", "", "5,1", "5,2", "1,3", "  "])
    assert trace == Trace((1.0, 5.0, 5.0), (3.0, 1.0, 2.0))


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["arrival,duration", "1,x"], "line 2: duration 'x' is not a number"),
        (["0,1", "-1,1"], "line 2: arrival '-1' must be a number of seconds >= 0"),
        (["0,inf"], "line 1: duration 'inf' must be a number of seconds >= 0"),
        (["start,duration", "0,1"], "line 1: expected a header naming the columns 'arrival'"),
        (["0,1", "3"], "line 2: expected arrival and duration"),
        (["arrival,duration"], "the trace has no requests"),
        ([], "the trace has no requests"),
    ],
)
def test_trace_errors_name_the_line(lines: list[str], message: str) -> None:
    with pytest.raises(TraceError, match="^" + message.replace("(", r"\(")):
        parse_trace(lines)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_bad_model_parameters() -> None:
    with pytest.raises(ValueError, match="cold_start"):
        _sim([(0, 1)], cold_start=-1)
    with pytest.raises(ValueError, match="tick"):
        _sim([(0, 1)], tick=0)


# -- hand-computed traces -------------------------------------------------------------


def test_one_request_from_zero_waits_one_cold_start() -> None:
    r = _sim([(0, 1)])  # keep_alive 10 (the SDK's default)
    assert (r.cold_starts, r.cold_start_waits, r.peak_runners) == (1, 1, 1)
    assert (r.wait_p50, r.wait_p99, r.wait_max) == (5.0, 5.0, 5.0)
    # Started at 0, ready at 5, served until 6, idle for keep_alive until 16.
    assert r.runner_seconds == 16.0
    assert r.end == 16.0
    assert (r.served, r.timed_out, r.rejected) == (1, 0, 0)


def test_keep_alive_trades_runner_seconds_for_cold_starts() -> None:
    spaced = [(0.0, 1.0), (30.0, 1.0)]
    cold = _sim(spaced, keep_alive=0)
    # Each request starts its own runner, which stops as soon as it is done.
    assert (cold.cold_starts, cold.cold_start_waits) == (2, 2)
    assert cold.runner_seconds == 6.0 + 6.0
    assert cold.wait_max == cold.wait_p50 == 5.0

    warm = _sim(spaced, keep_alive=60)
    # One runner: the second request finds it idle; it stops 60 s after 31.
    assert (warm.cold_starts, warm.cold_start_waits) == (1, 1)
    assert warm.runner_seconds == 91.0
    assert (warm.wait_p50, warm.wait_max) == (0.0, 5.0)


def test_keep_alive_is_seen_on_the_controllers_tick() -> None:
    # Idle from 6: keep_alive ends at 16, seen at the first tick after it (6 + 3 * 4).
    assert _sim([(0, 1)], tick=4).runner_seconds == 18.0
    assert _sim([(0, 1)], tick=0.5).runner_seconds == 16.0


def test_max_concurrency_caps_runners_and_the_queue_waits() -> None:
    burst = [(0.0, 10.0)] * 3
    one = _sim(burst, keep_alive=0, max_concurrency=1)
    assert (one.cold_starts, one.peak_runners) == (1, 1)
    assert (one.wait_p50, one.wait_max) == (15.0, 25.0)  # waits 5, 15, 25
    assert one.runner_seconds == 35.0
    assert one.cold_start_waits == 1  # the others waited for a busy runner

    three = _sim(burst, keep_alive=0, max_concurrency=3)
    assert (three.cold_starts, three.peak_runners, three.cold_start_waits) == (3, 3, 3)
    assert three.wait_max == 5.0
    assert three.runner_seconds == 3 * 15.0


def test_platform_default_ceiling_is_ten() -> None:
    r = _sim([(0.0, 1.0)] * 25)
    assert r.peak_runners == 10


def test_min_concurrency_runners_start_at_deploy() -> None:
    # The warm runner starts at t=0 and is ready at 5: a request at 10 does not wait.
    r = _sim([(10, 1)], min_concurrency=1)
    assert (r.cold_starts, r.cold_start_waits, r.wait_max) == (1, 0, 0.0)
    # It never stops; it is counted until the work is over (the request ends at 11).
    assert r.runner_seconds == 11.0
    # A request before it is ready waits for the rest of its cold start, and no other starts.
    early = _sim([(2, 1)], min_concurrency=1)
    assert (early.cold_starts, early.cold_start_waits, early.wait_max) == (1, 1, 3.0)


def test_max_multiplexing_shares_runners() -> None:
    r = _sim([(0.0, 1.0)] * 4, max_multiplexing=2)
    assert (r.cold_starts, r.cold_start_waits, r.wait_max) == (2, 4, 5.0)


def test_concurrency_buffer_starts_a_spare() -> None:
    r = _sim([(0, 1)], concurrency_buffer=1)
    assert (r.cold_starts, r.peak_runners) == (2, 2)


def test_scaling_delay_holds_back_the_second_runner() -> None:
    # r-1 is busy until 105; the request at 10 needs a second runner.
    trace = [(0.0, 100.0), (10.0, 1.0)]
    assert _sim(trace, keep_alive=1000).wait_max == 5.0
    # It asks only after waiting 2 s (seen on the tick at 12): ready at 17.
    delayed = _sim(trace, keep_alive=1000, scaling_delay=2)
    assert delayed.wait_max == 7.0
    assert delayed.cold_starts == 2
    # With no runner at all, scaling_delay does not apply (scale from zero).
    assert _sim([(0.0, 1.0)], scaling_delay=30).wait_max == 5.0


def test_request_timeout_cuts_a_long_request_and_frees_its_slot() -> None:
    r = _sim([(0, 100)], request_timeout=50)
    assert (r.served, r.timed_out, r.timed_out_waiting) == (0, 1, 0)
    assert r.runner_seconds == 50.0 + 10.0  # slot free at 50, keep_alive after
    assert _sim([(0, 45)], request_timeout=50).served == 1  # 5 + 45 is not past 50


def test_request_timeout_drops_a_waiting_request() -> None:
    r = _sim([(0.0, 1.0), (35.0, 1.0)], cold_start=30, request_timeout=12)
    # The first gives up at 12, before its runner is ready (30); the second finds it idle.
    assert (r.served, r.timed_out, r.timed_out_waiting, r.cold_starts) == (1, 1, 1, 1)
    assert (r.wait_p50, r.wait_max) == (0.0, 12.0)


def test_request_timeout_counts_waiting_plus_running() -> None:
    # One runner: the first runs 5..15 (15 s in all: served); the second starts at 15
    # after 15 s of waiting, so 15 + 10 > 16 and it is cut off at 16.
    r = _sim([(0.0, 10.0), (0.0, 10.0)], max_concurrency=1, request_timeout=16)
    assert (r.served, r.timed_out, r.timed_out_waiting) == (1, 1, 0)
    assert (r.wait_p50, r.wait_max) == (5.0, 15.0)


def test_full_queue_rejects() -> None:
    r = _sim([(0.0, 1.0)] * 3, max_concurrency=1, max_waiting=1)
    assert (r.served, r.rejected) == (1, 2)


def test_instant_cold_start() -> None:
    r = _sim([(0, 1)], cold_start=0, keep_alive=0)
    assert (r.wait_max, r.cold_starts, r.runner_seconds) == (0.0, 1, 1.0)


def test_empty_trace_keeps_min_concurrency() -> None:
    r = simulate(Trace((), ()), AppOptions(min_concurrency=2))
    assert (r.requests, r.cold_starts, r.runner_seconds, r.end) == (0, 2, 10.0, 5.0)


# -- properties -------------------------------------------------------------------------

# Times on a quarter-second grid are exact in binary, so the fast and the reference
# paths compute the same instants.
_grid = st.integers(0, 400).map(lambda q: q / 4)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[list[tuple[float, float]], AppOptions, dict[str, Any]]:
    requests = draw(st.lists(st.tuples(_grid, _grid), min_size=1, max_size=40))
    min_c = draw(st.integers(0, 3))
    options = AppOptions(
        keep_alive=draw(st.integers(0, 30)),
        min_concurrency=min_c,
        max_concurrency=draw(st.none() | st.integers(max(1, min_c), 6)),
        concurrency_buffer=draw(st.integers(0, 2)),
        concurrency_buffer_perc=draw(st.integers(0, 100)),
        scaling_delay=draw(st.integers(0, 5)),
        request_timeout=draw(st.none() | st.integers(1, 40)),
        max_multiplexing=draw(st.integers(1, 3)),
    )
    model = {
        "cold_start": draw(st.integers(0, 40).map(lambda q: q / 4)),
        "tick": draw(st.sampled_from([0.25, 0.5, 1.0, 2.0])),
        "max_waiting": draw(st.sampled_from([2, 1000])),
    }
    return requests, options, model


@settings(max_examples=300, deadline=None)
@given(_cases())
def test_every_request_is_answered_and_runners_stay_under_the_ceiling(
    case: tuple[list[tuple[float, float]], AppOptions, dict[str, Any]],
) -> None:
    requests, options, model = case
    r = simulate(Trace.of(requests), options, **model)
    assert r.served + r.timed_out + r.rejected == r.requests == len(requests)
    if options.request_timeout is None:
        assert r.timed_out == 0
    else:
        assert r.wait_max <= options.request_timeout
    if model["max_waiting"] >= len(requests):
        assert r.rejected == 0
    assert r.peak_runners <= (options.max_concurrency or 10)
    assert r.peak_runners <= r.cold_starts
    assert 0 <= r.wait_p50 <= r.wait_p99 <= r.wait_max
    assert r.runner_seconds >= 0
    assert r.end >= max(a for a, _ in requests)


@settings(max_examples=300, deadline=None)
@given(_cases())
def test_fast_path_matches_consulting_the_policy_on_every_tick(
    case: tuple[list[tuple[float, float]], AppOptions, dict[str, Any]],
) -> None:
    requests, options, model = case
    fast = simulate(Trace.of(requests), options, **model).as_dict()
    ref = simulate(Trace.of(requests), options, reference=True, **model).as_dict()
    assert fast.pop("policy_calls") <= ref.pop("policy_calls")
    assert fast == ref


# -- performance smoke ----------------------------------------------------------------


def test_a_100k_request_trace_runs() -> None:
    rng = random.Random(42)
    t, requests = 0.0, []
    for _ in range(100_000):
        t += rng.expovariate(10.0)  # ~10 requests/s of ~0.5 s each: ~5 runners busy
        requests.append((t, rng.expovariate(2.0)))
    trace = Trace.of(requests)
    started = time.perf_counter()
    r = simulate(trace, AppOptions())
    elapsed = time.perf_counter() - started
    print(f"\n100k requests simulated in {elapsed:.2f}s ({r.policy_calls} policy calls)")
    assert r.served == 100_000
