"""A new revision takes over without dropping requests: the old runners keep
serving until a new one is ready, then take no new work and stop once idle.

Pure: which old runner gets which move; the controller makes the moves."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from tidal.domain.runner import SERVING, STARTING, Runner, RunnerState


class Move(enum.Enum):
    DROP = "drop"  # never launched: ends at once
    DRAIN = "drain"  # takes no new requests
    STOP = "stop"  # stopped now (idle, or still starting)


def rollout_moves(fresh: Iterable[Runner], old: Iterable[Runner]) -> list[tuple[Runner, Move]]:
    new_ready = any(r.state in SERVING for r in fresh)
    moves: list[tuple[Runner, Move]] = []
    for r in old:
        if r.state in (RunnerState.FAILURE_DELAY, RunnerState.PENDING):
            moves.append((r, Move.DROP))
        elif new_ready and r.state in STARTING:
            moves.append((r, Move.STOP))
        elif new_ready and r.state in SERVING:
            busy = r.in_flight + r.long_lived  # open WebSockets finish too
            moves.append((r, Move.DRAIN if busy else Move.STOP))
        elif r.state is RunnerState.DRAINING and r.in_flight + r.long_lived == 0:
            moves.append((r, Move.STOP))
    return moves
