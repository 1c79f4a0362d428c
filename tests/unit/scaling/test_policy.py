"""The scaling decision: `decide(options, max_multiplexing, ceiling, load, runners)`.

Example tests pin each option's meaning; the property tests at the end check
invariants derived from the code over random inputs.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tidal.scaling.policy import Decision, Load, RunnerView, decide
from tidal.spec import ScalingOptions


def _opts(**kw: Any) -> ScalingOptions:
    return ScalingOptions(**kw)


def _ready(rid: str, in_flight: int = 0, idle_for: float = 0.0) -> RunnerView:
    return RunnerView(rid, True, in_flight, idle_for)


def _starting(rid: str) -> RunnerView:
    return RunnerView(rid, False, 0, 0.0)


def _decide(
    options: ScalingOptions | None = None,
    *,
    mm: int = 1,
    ceiling: int = 100,
    executing: int = 0,
    waits: tuple[float, ...] = (),
    runners: tuple[RunnerView, ...] = (),
) -> Decision:
    return decide(
        options or _opts(),
        max_multiplexing=mm,
        ceiling=ceiling,
        load=Load(executing, waits),
        runners=runners,
    )


# -- scale from zero and sizing -----------------------------------------------------


def test_nothing_to_do_with_no_load_and_no_runners() -> None:
    assert _decide() == Decision(0, 0, ())


def test_one_waiting_request_scales_from_zero() -> None:
    assert _decide(waits=(0.0,)) == Decision(1, 1, ())


def test_one_runner_per_max_multiplexing_slots_rounded_up() -> None:
    assert _decide(mm=4, waits=(0.0,) * 4).desired == 1
    assert _decide(mm=4, waits=(0.0,) * 5).desired == 2
    assert _decide(mm=4, executing=3, waits=(0.0,) * 6).desired == 3  # ceil(9 / 4)
    assert _decide(mm=1, executing=2, waits=(0.0,)).desired == 3


def test_desired_never_above_max_concurrency() -> None:
    d = _decide(_opts(max_concurrency=3), waits=(0.0,) * 10, ceiling=100)
    assert d == Decision(3, 3, ())


def test_desired_never_above_the_ceiling() -> None:
    d = _decide(_opts(max_concurrency=50), waits=(0.0,) * 10, ceiling=2)
    assert d == Decision(2, 2, ())
    assert _decide(waits=(0.0,) * 10, ceiling=4).desired == 4  # max_concurrency None
    assert _decide(_opts(concurrency_buffer=50), ceiling=4).desired == 4


def test_min_concurrency_kept_with_no_load() -> None:
    assert _decide(_opts(min_concurrency=2)) == Decision(2, 2, ())
    idle = (_ready("a", idle_for=1e6), _ready("b", idle_for=1e6))
    assert _decide(_opts(min_concurrency=2, keep_alive=0), runners=idle) == Decision(2, 0, ())


def test_min_concurrency_capped_by_the_ceiling() -> None:
    assert _decide(_opts(min_concurrency=5), ceiling=1).desired == 1


def test_scale_down_never_goes_below_min_concurrency() -> None:
    runners = tuple(_ready(f"r{i}", idle_for=100.0 + i) for i in range(4))
    d = _decide(_opts(min_concurrency=1, keep_alive=10), runners=runners)
    assert d.desired == 1
    assert d.start == 0
    assert set(d.stop) == {"r3", "r2", "r1"}


# -- buffers ---------------------------------------------------------------------------


def test_concurrency_buffer_adds_runners() -> None:
    assert _decide(_opts(concurrency_buffer=2), waits=(0.0,)).desired == 3
    # With no load the buffer still applies: that is how fal keeps warm spares.
    assert _decide(_opts(concurrency_buffer=2)).desired == 2


def test_concurrency_buffer_perc_of_needed_rounded_up() -> None:
    # needed 10, 25% -> 2.5 -> 3
    assert _decide(_opts(concurrency_buffer_perc=25), executing=10).desired == 13
    # needed 1, 1% -> 0.01 -> 1
    assert _decide(_opts(concurrency_buffer_perc=1), executing=1).desired == 2
    # needed 0 -> no buffer
    assert _decide(_opts(concurrency_buffer_perc=100)).desired == 0


def test_buffer_is_the_larger_of_fixed_and_percentage() -> None:
    o = _opts(concurrency_buffer=2, concurrency_buffer_perc=50)
    assert _decide(o, executing=2).desired == 4  # max(2, ceil(1)) = 2
    assert _decide(o, executing=10).desired == 15  # max(2, 5) = 5


def test_buffer_is_capped_by_max_concurrency() -> None:
    o = _opts(concurrency_buffer=5, max_concurrency=3)
    assert _decide(o, executing=1).desired == 3


# -- starting runners ----------------------------------------------------------------------


def test_starting_runners_count_toward_desired() -> None:
    d = _decide(waits=(0.0,) * 2, runners=(_starting("s1"), _starting("s2")))
    assert d == Decision(2, 0, ())


def test_only_the_shortfall_is_started() -> None:
    d = _decide(waits=(0.0,) * 3, runners=(_starting("s1"),))
    assert d == Decision(3, 2, ())


def test_starting_runners_are_never_stopped() -> None:
    d = _decide(_opts(keep_alive=0), runners=(_starting("s1"), _starting("s2")))
    assert d.desired == 0
    assert d.stop == ()


# -- scaling_delay ---------------------------------------------------------------------------


def test_young_waits_do_not_start_a_runner_when_runners_exist() -> None:
    o = _opts(scaling_delay=5)
    busy = (_ready("a", in_flight=1),)
    assert _decide(o, executing=1, waits=(4.9, 0.0), runners=busy) == Decision(1, 0, ())


def test_waits_at_or_past_the_delay_start_runners() -> None:
    o = _opts(scaling_delay=5)
    busy = (_ready("a", in_flight=1),)
    assert _decide(o, executing=1, waits=(5.0, 7.0, 1.0), runners=busy) == Decision(3, 2, ())


def test_scale_from_zero_ignores_scaling_delay() -> None:
    o = _opts(scaling_delay=60)
    assert _decide(o, waits=(0.0,)) == Decision(1, 1, ())
    assert _decide(o, waits=(0.0, 0.1, 0.2)) == Decision(3, 3, ())


def test_scaling_delay_applies_once_a_runner_is_starting() -> None:
    o = _opts(scaling_delay=60)
    d = _decide(o, waits=(0.0, 0.1), runners=(_starting("s1"),))
    assert d.start == 0
    assert d.stop == ()


# -- keep_alive ---------------------------------------------------------------------------------


def test_idle_runner_kept_until_keep_alive() -> None:
    o = _opts(keep_alive=10)
    assert _decide(o, runners=(_ready("a", idle_for=9.99),)) == Decision(0, 0, ())
    assert _decide(o, runners=(_ready("a", idle_for=10.0),)) == Decision(0, 0, ("a",))


def test_longest_idle_stops_first() -> None:
    o = _opts(keep_alive=10)
    runners = (
        _ready("a", idle_for=20.0),
        _ready("b", idle_for=50.0),
        _ready("c", idle_for=30.0),
        _ready("d", in_flight=1),
    )
    # executing 1 -> desired 1: three of four may go; all three idle ones are past keep_alive.
    d = _decide(o, executing=1, runners=runners)
    assert d == Decision(1, 0, ("b", "c", "a"))
    # With more load only the longest idle goes.
    d = _decide(o, executing=3, runners=runners)
    assert d == Decision(3, 0, ("b",))


def test_busy_runners_are_never_stopped() -> None:
    o = _opts(keep_alive=0)
    runners = (_ready("a", in_flight=1, idle_for=100.0), _ready("b", in_flight=2, idle_for=100.0))
    assert _decide(o, mm=4, executing=3, runners=runners) == Decision(1, 0, ())


def test_keep_alive_zero_stops_idle_runners_at_once() -> None:
    assert _decide(_opts(keep_alive=0), runners=(_ready("a"),)).stop == ("a",)


def test_no_stop_while_load_needs_every_runner() -> None:
    runners = (_ready("a", idle_for=100.0), _ready("b", in_flight=1))
    assert _decide(_opts(keep_alive=0), executing=1, waits=(0.0,), runners=runners).stop == ()


# -- properties ---------------------------------------------------------------------------------


@st.composite
def scaling_options(draw: st.DrawFn) -> ScalingOptions:
    min_c = draw(st.integers(0, 12))
    max_c = draw(st.none() | st.integers(max(1, min_c), 15))
    return ScalingOptions(
        keep_alive=draw(st.integers(0, 30)),
        min_concurrency=min_c,
        max_concurrency=max_c,
        concurrency_buffer=draw(st.integers(0, 6)),
        concurrency_buffer_perc=draw(st.integers(0, 100)),
        scaling_delay=draw(st.integers(0, 10)),
    )


@st.composite
def runner_views(draw: st.DrawFn) -> tuple[RunnerView, ...]:
    n = draw(st.integers(0, 12))
    views = []
    for i in range(n):
        ready = draw(st.booleans())
        in_flight = draw(st.integers(0, 4)) if ready else 0
        idle_for = draw(st.floats(0, 60, allow_nan=False)) if ready else 0.0
        views.append(RunnerView(f"r{i}", ready, in_flight, idle_for))
    return tuple(views)


loads = st.builds(
    Load,
    executing=st.integers(0, 40),
    waits=st.lists(st.floats(0, 20, allow_nan=False), max_size=20).map(tuple),
)

COMMON = {
    "options": scaling_options(),
    "mm": st.integers(1, 8),
    "ceiling": st.integers(1, 20),
    "load": loads,
    "runners": runner_views(),
}


def _top(options: ScalingOptions, ceiling: int) -> int:
    return min(ceiling, options.max_concurrency or ceiling)


def _stoppable(options: ScalingOptions, runners: tuple[RunnerView, ...]) -> list[RunnerView]:
    return [r for r in runners if r.ready and r.in_flight == 0 and r.idle_for >= options.keep_alive]


Case = tuple[ScalingOptions, int, int, Load, tuple[RunnerView, ...], Decision]


def _check_desired_within_bounds(case: Case) -> None:
    """min(min_concurrency, top) <= desired <= top, top = min(ceiling, max_concurrency or ceiling)."""
    options, _, ceiling, _, _, d = case
    top = _top(options, ceiling)
    assert min(options.min_concurrency, top) <= d.desired <= top


def _check_start_and_stop_exclusive_and_exact(case: Case) -> None:
    """start and stop are never both non-zero; start > 0 exactly when desired > len(runners),
    and then start == desired - len(runners)."""
    *_, runners, d = case
    assert not (d.start and d.stop)
    assert d.start >= 0
    if d.desired > len(runners):
        assert d.start == d.desired - len(runners)
        assert d.stop == ()
    else:
        assert d.start == 0


def _check_stops_only_ready_idle_past_keep_alive(case: Case) -> None:
    """stop is a duplicate-free subset of ready runners with in_flight == 0 and
    idle_for >= keep_alive; starting and busy runners are never stopped."""
    options, *_, runners, d = case
    eligible = {r.id for r in _stoppable(options, runners)}
    assert len(set(d.stop)) == len(d.stop)
    assert set(d.stop) <= eligible


def _check_never_scales_below_desired(case: Case) -> None:
    """len(runners) + start - len(stop) >= desired always, with equality whenever start > 0:
    stops never take the fleet below desired, and starts fill exactly the shortfall."""
    *_, runners, d = case
    after = len(runners) + d.start - len(d.stop)
    assert after >= d.desired
    if d.start:
        assert after == d.desired


def _check_stops_as_many_as_allowed_longest_idle_first(case: Case) -> None:
    """len(stop) == min(max(0, len(runners) - desired), number of stoppable runners); stop is
    ordered longest idle first, and every stopped runner has been idle at least as long as
    every stoppable one kept."""
    options, *_, runners, d = case
    stoppable = _stoppable(options, runners)
    assert len(d.stop) == min(max(0, len(runners) - d.desired), len(stoppable))
    stopped = [r for r in stoppable if r.id in d.stop]
    kept = [r for r in stoppable if r.id not in d.stop]
    if stopped and kept:
        assert min(r.idle_for for r in stopped) >= max(r.idle_for for r in kept)
    by_id = {r.id: r for r in runners}
    idles = [by_id[i].idle_for for i in d.stop]
    assert idles == sorted(idles, reverse=True)


def _check_desired_covers_counted_load(case: Case) -> None:
    """desired >= min(ceil((executing + counted waits) / max_multiplexing), top), where a wait
    counts when it is at least scaling_delay old, or always when there are no runners."""
    options, mm, ceiling, load, runners, d = case
    if runners:
        counted = sum(1 for w in load.waits if w >= options.scaling_delay)
    else:
        counted = len(load.waits)
    needed = math.ceil((load.executing + counted) / mm)
    assert d.desired >= min(needed, _top(options, ceiling))


INVARIANTS = (
    _check_desired_within_bounds,
    _check_start_and_stop_exclusive_and_exact,
    _check_stops_only_ready_idle_past_keep_alive,
    _check_never_scales_below_desired,
    _check_stops_as_many_as_allowed_longest_idle_first,
    _check_desired_covers_counted_load,
)


@settings(max_examples=300, deadline=None)
@given(**COMMON)
def test_property_invariants(
    options: ScalingOptions, mm: int, ceiling: int, load: Load, runners: tuple[RunnerView, ...]
) -> None:
    """Every invariant in INVARIANTS holds for any input (see each check's docstring)."""
    d = decide(options, max_multiplexing=mm, ceiling=ceiling, load=load, runners=runners)
    case: Case = (options, mm, ceiling, load, runners, d)
    for check in INVARIANTS:
        check(case)


@settings(max_examples=100, deadline=None)
@given(**COMMON, extra=st.integers(1, 10))
def test_property_more_load_never_lowers_desired(
    options: ScalingOptions,
    mm: int,
    ceiling: int,
    load: Load,
    runners: tuple[RunnerView, ...],
    extra: int,
) -> None:
    """desired is monotone in load: more executing requests never lower it."""
    kw = {"max_multiplexing": mm, "ceiling": ceiling, "runners": runners}
    base = decide(options, load=load, **kw)
    more = decide(options, load=Load(load.executing + extra, load.waits), **kw)
    assert more.desired >= base.desired


@settings(max_examples=100, deadline=None)
@given(options=scaling_options(), mm=st.integers(1, 8), ceiling=st.integers(1, 20), load=loads)
def test_property_from_zero_starts_desired(
    options: ScalingOptions, mm: int, ceiling: int, load: Load
) -> None:
    """With no runners, start == desired, stop is empty, and any waiting request starts
    at least one runner regardless of scaling_delay."""
    d = decide(options, max_multiplexing=mm, ceiling=ceiling, load=load, runners=())
    assert d.start == d.desired
    assert d.stop == ()
    if load.waits:
        assert d.start >= 1
