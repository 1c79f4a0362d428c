"""One deployed app as the controller keeps it: its record, its router, its runners."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from tidal.domain.app import AppRecord
from tidal.domain.router import AppRouter
from tidal.domain.runner import Runner


@dataclass
class Deployment:
    record: AppRecord
    router: AppRouter
    runners: dict[str, Runner] = field(default_factory=dict)
    ended: deque[Runner] = field(default_factory=deque)
    failures: int = 0  # failed starts in a row (reset by a ready runner or a new revision)
    next_start_at: float = 0.0  # monotonic; backoff after failed starts
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    openapi_wanted: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.record.owner, self.record.name)
