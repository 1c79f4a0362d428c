"""An in-memory backend (and prober) on the controller's clock, for tests and the
simulator: runners "start" without a process, answer HTTP once their cold start
has passed on that clock, and exit when told to (or when stopped)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from tidal.backends.base import RunnerLaunch
from tidal.domain.runner import Address, Runner
from tidal.scaling.clock import Clock


@dataclass
class MemoryServer:
    """One runner's pretend server."""

    launch: RunnerLaunch
    answers_at: float  # monotonic: when it starts answering HTTP
    exit: asyncio.Future[int]
    health_status: int = 200  # what its health check answers
    listens: bool = True  # False: never answers (a start that times out)
    stopped: bool = False
    said: asyncio.Event = field(default_factory=asyncio.Event)  # "listening", over its line


@dataclass
class MemoryBackend:
    clock: Clock
    cold_start: float = 2.0
    name: str = "memory"
    own_placement: bool = False
    servers: dict[str, MemoryServer] = field(default_factory=dict)  # runner id -> server
    # Set by a test: the next starts raise this, or never listen.
    fail_starts: str = ""
    silent_starts: bool = False
    # A line to its runners, like the local backend's: each runner says it listens this
    # long after it answers (negative: too early; inf: never). None: no line.
    says_listening: float | None = None
    probes: int = 0  # HTTP probes answered or refused, for a test to count
    _ports: itertools.count[int] = field(default_factory=lambda: itertools.count(20000))
    _by_port: dict[int, str] = field(default_factory=dict)
    _saying: set[asyncio.Future[None]] = field(default_factory=set)

    # -- the Backend protocol ---------------------------------------------------
    def reap_orphans(self) -> int:
        return 0

    async def start(self, runner: Runner, launch: RunnerLaunch) -> None:
        if self.fail_starts:
            raise RuntimeError(self.fail_starts)
        port = next(self._ports)
        runner.address, runner.pid = Address("127.0.0.1", port), port
        self._by_port[port] = runner.id
        self.servers[runner.id] = MemoryServer(
            launch,
            self.clock.monotonic() + self.cold_start,
            asyncio.get_running_loop().create_future(),
            listens=not self.silent_starts,
        )
        if self.says_listening is not None and self.says_listening != float("inf"):
            server = self.servers[runner.id]
            task = asyncio.ensure_future(self._say(server, self.cold_start + self.says_listening))
            self._saying.add(task)
            task.add_done_callback(self._saying.discard)

    async def _say(self, server: MemoryServer, after: float) -> None:
        await self.clock.sleep(after)
        server.said.set()

    def listening(self, runner: Runner) -> asyncio.Event | None:
        server = self.servers.get(runner.id)
        return server.said if server is not None and self.says_listening is not None else None

    async def wait_exit(self, runner: Runner) -> int:
        return await self.servers[runner.id].exit

    async def stop(self, runner: Runner, grace: float) -> None:
        server = self.servers.get(runner.id)
        if server is not None:
            server.stopped = True
            if not server.exit.done():
                server.exit.set_result(0)

    def exited(self, runner: Runner) -> bool:
        server = self.servers.get(runner.id)
        return server is None or server.exit.done()

    def kill_all(self) -> None:
        for server in self.servers.values():
            if not server.exit.done():
                server.exit.set_result(-9)

    def can_share_port(self) -> bool:
        return True

    # -- the Prober protocol ----------------------------------------------------
    def _server(self, address: Address) -> MemoryServer | None:
        server = self.servers.get(self._by_port.get(address.port, ""))
        if server is None or server.exit.done() or not server.listens:
            return None
        return server if self.clock.monotonic() >= server.answers_at else None

    async def answers(self, address: Address, timeout: float) -> bool:
        self.probes += 1
        return self._server(address) is not None

    async def request(
        self, address: Address, method: str, path: str, timeout: float
    ) -> tuple[int, bytes]:
        server = self._server(address)
        if server is None:
            raise ConnectionRefusedError(f"nothing answers on port {address.port}")
        return server.health_status, b"{}"

    # -- what a test does -----------------------------------------------------
    def crash(self, runner_id: str, code: int = 1) -> None:
        server = self.servers[runner_id]
        if not server.exit.done():
            server.exit.set_result(code)
