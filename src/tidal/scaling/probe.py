"""How the controller asks a runner's server something: an interface, so that
scaling does not depend on the gateway's HTTP client (the platform passes
`tidal.gateway.upstream.HttpProber`; tests pass an in-memory one)."""

from __future__ import annotations

from typing import Protocol

from tidal.domain.runner import Address


class Prober(Protocol):
    async def answers(self, address: Address, timeout: float) -> bool:
        """Whether a server at `address` answers HTTP at all (any status)."""
        ...

    async def request(
        self, address: Address, method: str, path: str, timeout: float
    ) -> tuple[int, bytes]:
        """One request; its status and body. Raises OSError or TimeoutError."""
        ...
