"""The runner lifecycle: the moves it allows, the timestamps they record, and that
a move outside the table is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidal.domain.runner import ENDED, MOVES, IllegalTransition, Runner, RunnerState

S = RunnerState


def _runner(state: RunnerState = S.PENDING) -> Runner:
    return Runner(id="r-1", app="a", revision=1, backend="local", log_path=Path("x"), state=state)


def test_a_runner_lives_through_fals_states_in_order() -> None:
    r = _runner()
    r.transition(S.SETUP, at=10.0)
    r.transition(S.IDLE, at=12.0)
    r.transition(S.RUNNING)
    r.transition(S.IDLE)
    r.transition(S.DRAINING)
    r.transition(S.TERMINATING)
    r.transition(S.TERMINATED, "idle for keep_alive (60s)", at=20.0)
    assert (r.starting_at, r.ready_at, r.ended_at) == (10.0, 12.0, 20.0)
    assert r.reason == "idle for keep_alive (60s)"
    assert not r.live


def test_a_move_outside_the_table_is_refused_and_changes_nothing() -> None:
    r = _runner(S.SETUP)
    with pytest.raises(IllegalTransition, match="setup -> running"):
        r.transition(S.RUNNING)  # a runner takes requests only once it answers
    assert r.state is S.SETUP


@pytest.mark.parametrize("end", sorted(ENDED))
def test_an_ended_runner_never_comes_back(end: RunnerState) -> None:
    r = _runner(end)
    for state in S:
        assert not r.can_move(state)


def test_every_live_state_can_end() -> None:
    """No state a runner can get stuck in: from each live state some path ends it."""
    for state in S:
        seen, todo = {state}, [state]
        while todo:
            for nxt in MOVES[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen & ENDED, state
