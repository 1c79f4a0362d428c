"""Sharing one host between apps: which idle runners of other apps give their
room to a runner that waits for capacity.

Pure: the controller gathers the candidates and acts on the answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tidal.scaling.placement import Allocation, Inventory


@dataclass(frozen=True)
class IdleRunner:
    """A runner that could yield: idle, of another app, on this host's inventory."""

    id: str
    app: tuple[str, str]  # (owner, name)
    allocation: Allocation
    idle_for: float  # seconds since its last request ended
    spare: bool  # its app has more live runners than its min_concurrency


def choose_yielders(
    machine_types: list[str],
    num_gpus: int | None,
    inventory: Inventory,
    candidates: Iterable[IdleRunner],
    *,
    floor: float,
    freeing: list[Allocation],
) -> list[str]:
    """The idle runners to stop so that a waiting runner fits: longest idle first, only
    those idle for at least `floor` seconds and above their app's min_concurrency, at
    most one per app's spare runner; none at all when stopping them all would still not
    make room (stopping them would cost their apps a cold start for nothing). `freeing`:
    allocations already on their way back (runners stopping now), counted as free."""
    if inventory.fits_after(machine_types, num_gpus, freeing):
        return []  # room is on its way
    eligible = sorted(
        (c for c in candidates if c.spare and c.idle_for >= floor),
        key=lambda c: c.idle_for,
        reverse=True,
    )
    chosen: list[IdleRunner] = []
    for candidate in eligible:
        chosen.append(candidate)
        if inventory.fits_after(machine_types, num_gpus, freeing + [c.allocation for c in chosen]):
            return [c.id for c in chosen]
    return []
