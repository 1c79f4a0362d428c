"""The controller on a manual clock with an in-memory backend: every case runs
in virtual time (Knative's autoscaler tests are the model), so the whole file
takes well under a second of real time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tidal.config import PlatformConfig
from tidal.domain.app import AppRecord
from tidal.domain.router import RouterError
from tidal.domain.runner import Runner, RunnerState
from tidal.machines import HostCapacity, MachineType
from tidal.scaling.clock import ManualClock, settle
from tidal.scaling.controller import Controller, Deployment
from tidal.scaling.fakes import MemoryBackend
from tidal.scaling.placement import Inventory
from tidal.spec import AppOptions, AppSpec, HealthCheckSpec

S = RunnerState
COLD_START = 2.0


class Platform:
    """A controller, its manual clock and its in-memory backend."""

    def __init__(self, data_dir: Path, cpus: float = 8.0, **config: Any) -> None:
        self.clock = ManualClock()
        self.backend = MemoryBackend(self.clock, cold_start=COLD_START)
        catalog = {
            "XS": MachineType("XS", 0.5, 512),
            "S": MachineType("S", 1, 1024),
            "M": MachineType("M", 2, 2048),
        }
        self.inventory = Inventory(HostCapacity(cpus=cpus, memory_mb=16384), catalog)
        self.controller = Controller(
            PlatformConfig(data_dir=data_dir, **config),
            {"memory": self.backend},
            self.inventory,
            self.backend,
            clock=self.clock,
        )

    def deploy(self, name: str, revision: int = 1, health: HealthCheckSpec | None = None,
               **options: Any) -> Deployment:  # fmt: skip
        spec = AppSpec(
            name=name,
            entry="app.py::f",
            kind="app" if health else "function",
            options=AppOptions(**options),
            openapi={},
            health_check=health,
            backend="memory",
        )
        return self.controller.apply(AppRecord("local", name, revision, spec, 0.0, 0.0))

    def call(self, dep: Deployment, seconds: float) -> asyncio.Task[Runner]:
        """A request that holds a slot for `seconds` of virtual time."""

        async def request() -> Runner:
            runner = await dep.router.acquire()
            await self.clock.sleep(seconds)
            dep.router.release(runner)
            return runner

        return asyncio.ensure_future(request())

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)

    async def close(self) -> None:
        self.controller.backends.clear()  # nothing left to kill
        for dep in list(self.controller.deployments.values()):
            if dep.task:
                dep.task.cancel()
        for task in list(self.controller._tasks):
            task.cancel()
        await settle()


def states(dep: Deployment) -> list[str]:
    return sorted(r.state.value for r in dep.runners.values())


def ended(dep: Deployment) -> list[tuple[str, str]]:
    return [(r.state.value, r.reason) for r in dep.ended]


def run(tmp_path: Path, test: Callable[[Platform], Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        platform = Platform(tmp_path, **kwargs)
        try:
            await test(platform)
        finally:
            await platform.close()

    asyncio.run(main())


def test_scale_from_zero_serves_the_request_after_one_cold_start(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        dep = p.deploy("echo", keep_alive=60)
        await settle()
        assert states(dep) == []
        request = p.call(dep, 1.0)
        await settle()
        assert states(dep) == ["setup"]  # PENDING found room at once
        await p.advance(COLD_START - 0.1)
        assert not request.done()
        await p.advance(0.2)
        assert states(dep) == ["running"]
        await p.advance(1.0)
        assert request.done() and states(dep) == ["idle"]

    run(tmp_path, test)


def test_keep_alive_then_scale_to_zero(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        dep = p.deploy("echo", keep_alive=30)
        p.call(dep, 1.0)
        await p.advance(COLD_START + 1.5)
        assert states(dep) == ["idle"]
        await p.advance(28.0)
        assert states(dep) == ["idle"]  # keep_alive not over yet
        await p.advance(2.0)
        assert states(dep) == []
        assert ended(dep) == [("terminated", "idle for keep_alive (30s)")]

    run(tmp_path, test)


def test_min_concurrency_keeps_runners_past_keep_alive(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        dep = p.deploy("warm", keep_alive=1, min_concurrency=2)
        await p.advance(COLD_START + 60)
        assert states(dep) == ["idle", "idle"]

    run(tmp_path, test)


def test_a_concurrency_buffer_starts_spare_runners(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        dep = p.deploy("buffered", concurrency_buffer=2, keep_alive=60)
        p.call(dep, 10.0)
        await p.advance(COLD_START + 0.5)
        assert states(dep) == ["idle", "idle", "running"]

    run(tmp_path, test)


def test_scaling_delay_holds_a_new_runner_back(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        dep = p.deploy("slow", scaling_delay=5, keep_alive=60)
        p.call(dep, 100.0)
        await p.advance(COLD_START + 0.5)
        assert states(dep) == ["running"]
        p.call(dep, 1.0)  # waits: the only slot is busy
        await p.advance(4.0)
        assert states(dep) == ["running"]  # waited less than scaling_delay
        await p.advance(1.5)
        assert states(dep) == ["running", "setup"]

    run(tmp_path, test)


def test_max_concurrency_caps_runners(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        dep = p.deploy("capped", max_concurrency=2, keep_alive=60)
        for _ in range(5):
            p.call(dep, 10.0)
        await p.advance(COLD_START + 0.5)
        assert states(dep) == ["running", "running"]
        assert len(dep.router.waits(p.clock.monotonic())) == 3

    run(tmp_path, test)


def test_rollout_keeps_the_old_revision_serving_until_the_new_one_answers(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        dep = p.deploy("rolling", keep_alive=60)
        busy = p.call(dep, 10.0)
        await p.advance(COLD_START + 0.5)
        old = next(iter(dep.runners.values()))
        p.deploy("rolling", revision=2, keep_alive=60)
        await settle()
        assert sorted((r.revision, r.state.value) for r in dep.runners.values()) == [
            (1, "running"),
            (2, "setup"),
        ]
        await p.advance(COLD_START + 0.5)
        # The new one answers: the old one takes no new work and finishes its request.
        assert old.state is S.DRAINING
        after = p.call(dep, 0.1)
        await p.advance(10.0)
        assert after.result() is not old
        assert busy.done() and old.state is S.TERMINATED
        assert old.reason == "replaced by revision 2"
        assert [r.revision for r in dep.runners.values()] == [2]

    run(tmp_path, test)


def test_failed_starts_back_off_in_failure_delay(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        p.backend.fail_starts = "no such image"
        dep = p.deploy("broken", min_concurrency=1)
        await settle()
        assert ended(dep) == [("failed", "the backend could not start it: no such image")]
        await p.advance(0.6)
        # Waiting out the backoff (1 s after the first failure), visibly.
        assert states(dep) == ["failure_delay"]
        p.backend.fail_starts = ""
        await p.advance(0.6)
        assert states(dep) == ["setup"]
        await p.advance(COLD_START)
        assert states(dep) == ["idle"] and dep.failures == 0

    run(tmp_path, test)


def test_backoff_doubles_and_waiting_requests_get_an_answer(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        p.backend.fail_starts = "boom"
        dep = p.deploy("broken")
        request = p.call(dep, 1.0)
        await settle()
        # Nobody else will serve it: the request is answered 503 at once.
        with pytest.raises(RouterError) as error:
            await request
        assert error.value.status == 503 and "boom" in error.value.detail
        assert dep.failures == 1
        assert dep.next_start_at - p.clock.monotonic() == pytest.approx(1.0)
        for failures in (2, 3):
            request = p.call(dep, 1.0)
            await p.advance(2.0 ** (failures - 2) + 0.6)
            with pytest.raises(RouterError):
                await request
            assert dep.failures == failures
        assert states(dep) == []

    run(tmp_path, test)


def test_a_start_that_never_answers_fails_at_startup_timeout(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        p.backend.silent_starts = True
        dep = p.deploy("mute", startup_timeout=30)
        request = p.call(dep, 1.0)
        await p.advance(29.0)
        assert states(dep) == ["setup"]
        await p.advance(1.5)
        with pytest.raises(RouterError):
            await request
        assert ended(dep)[0][0] == "failed" and "startup_timeout (30s)" in ended(dep)[0][1]

    run(tmp_path, test)


def test_a_crashed_runner_is_replaced(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        dep = p.deploy("crashy", min_concurrency=1)
        await p.advance(COLD_START + 0.5)
        first = next(iter(dep.runners))
        p.backend.crash(first, code=3)
        await settle()
        assert ended(dep) == [("failed", "exited with status 3")]
        await p.advance(0.6)
        assert states(dep) == ["setup"]  # a crash after ready is not a failed start

    run(tmp_path, test)


def test_failing_health_checks_replace_the_runner(tmp_path: Path) -> None:
    check = HealthCheckSpec(path="/health", start_period_seconds=10, failure_threshold=3)

    async def test(p: Platform) -> None:
        dep = p.deploy("checked", health=check, min_concurrency=1)
        await p.advance(COLD_START + 0.5)
        first = next(iter(dep.runners))
        p.backend.servers[first].health_status = 500
        await p.advance(10 + 15 * 2 - 3)  # the first two failures
        assert first in dep.runners
        await p.advance(15)
        assert ended(dep) == [
            ("failed", "health check /health failed 3 times in a row (last: HTTP 500)")
        ]
        await p.advance(0.6)
        assert [r.state.value for r in dep.runners.values()] in (["setup"], ["idle"])

    run(tmp_path, test, health_check_interval_seconds=15.0)


def test_idle_runners_of_other_apps_yield_to_a_waiting_request(tmp_path: Path) -> None:
    """The issue's case on a 2-CPU host: two small apps sit idle within keep_alive; a
    third needing 2 CPUs answers within one cold start, not after their keep_alive."""

    async def test(p: Platform) -> None:
        a = p.deploy("a", machine_type="S", keep_alive=60)
        b = p.deploy("b", machine_type="S", keep_alive=60)
        p.call(a, 1.0)
        p.call(b, 1.0)
        await p.advance(COLD_START + 1.5)
        assert states(a) == states(b) == ["idle"]
        await p.advance(5.0)  # past the guaranteed idle floor
        big = p.deploy("big", machine_type="M", keep_alive=60)
        request = p.call(big, 0.1)
        await settle()
        assert ended(a) == ended(b) == [("terminated", "stopped for app big's waiting request")]
        await p.advance(COLD_START + 0.2)
        assert request.done()  # within one cold start (and its 0.1 s of work)

    run(tmp_path, test, cpus=2.0)


def test_yielding_respects_the_idle_floor_and_min_concurrency(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        kept = p.deploy("kept", machine_type="S", min_concurrency=1, keep_alive=60)
        fresh = p.deploy("fresh", machine_type="S", keep_alive=60)
        await p.advance(COLD_START + 0.5)
        p.call(fresh, 0.5)
        await p.advance(COLD_START + 1.0)
        big = p.deploy("big", machine_type="M")
        request = p.call(big, 0.1)
        await p.advance(2.0)
        # "fresh" has been idle under the floor (5 s); "kept" is at its min_concurrency;
        # stopping only one would not make room, so nobody yields yet.
        assert states(kept) == states(fresh) == ["idle"]
        assert "waiting for capacity" in next(iter(big.runners.values())).reason
        await p.advance(3.0)
        assert states(kept) == ["idle"] and states(fresh) == ["idle"]
        assert not request.done()

    run(tmp_path, test, cpus=2.0)


def test_the_longest_idle_runner_yields_first(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        older = p.deploy("older", machine_type="S", keep_alive=600)
        newer = p.deploy("newer", machine_type="S", keep_alive=600)
        p.call(older, 0.1)
        await p.advance(COLD_START + 20)
        p.call(newer, 0.1)
        await p.advance(COLD_START + 20)
        p.call(p.deploy("third", machine_type="S"), 0.1)
        await settle()
        assert ended(older) == [("terminated", "stopped for app third's waiting request")]
        assert states(newer) == ["idle"]

    run(tmp_path, test, cpus=2.0)


def test_apps_at_rest_are_not_reconciled_every_tick(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        passes: list[str] = []
        reconcile = p.controller.reconcile

        def counted(dep: Deployment) -> None:
            passes.append(dep.record.name)
            reconcile(dep)

        p.controller.reconcile = counted  # type: ignore[method-assign]
        deps = [p.deploy(f"idle-{i}", keep_alive=1) for i in range(50)]
        await settle()
        passes.clear()
        await p.advance(10.0)  # 20 ticks: nothing to do for any of them
        assert passes == []
        # A request wakes its app at once; it ticks while it has a runner, then rests.
        request = p.call(deps[7], 0.5)
        await p.advance(COLD_START + 1.0)
        assert (await request).app == "idle-7" and set(passes) == {"idle-7"}
        await p.advance(5.0)  # past keep_alive: its runner stops
        assert states(deps[7]) == []
        passes.clear()
        await p.advance(10.0)
        assert passes == []

    run(tmp_path, test)


def _deploy_app(p: Platform, name: str, kind: str = "app", **options: Any) -> Deployment:
    spec = AppSpec(name=name, entry="app.py::A", kind=kind,
                   options=AppOptions(keep_alive=60, **options), openapi={}, backend="memory")  # fmt: skip
    return p.controller.apply(AppRecord("local", name, 1, spec, 0.0, 0.0))


async def _cold_start(p: Platform, dep: Deployment) -> tuple[Runner, float]:
    """One request at zero runners: the runner that served it and when it was ready."""
    started = p.clock.monotonic()
    request = p.call(dep, 0.1)
    await settle()
    while not any(r.state in (S.RUNNING, S.IDLE) for r in dep.runners.values()):
        await p.advance(0.001)
    (runner,) = dep.runners.values()
    await p.advance(0.2)
    assert request.done()
    return runner, p.clock.monotonic() - 0.2 - started


@pytest.mark.parametrize("kind", ["app", "function"])  # an App, a plain function
def test_a_runner_that_says_it_listens_is_ready_at_its_word(tmp_path: Path, kind: str) -> None:
    async def test(p: Platform) -> None:
        p.backend.says_listening = 0.0
        runner, ready_after = await _cold_start(p, _deploy_app(p, "said", kind=kind))
        assert runner.ready_from == "listening signal"
        assert ready_after == pytest.approx(COLD_START, abs=0.002)
        # Not probed every 5 ms while it started: at start, once a second, at its word.
        assert p.backend.probes <= 4, p.backend.probes

    run(tmp_path, test)


def test_a_lost_word_is_covered_by_the_backstop_probe(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        p.backend.says_listening = float("inf")
        runner, ready_after = await _cold_start(p, _deploy_app(p, "lost"))
        assert runner.ready_from == "probe"
        assert COLD_START < ready_after <= COLD_START + 1.0 + 0.25 + 0.002

    run(tmp_path, test)


def test_a_word_just_behind_a_backstop_probe_still_counts(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        # It answers at 2.0, which the backstop probe at 2.0 sees; its word follows.
        p.backend.says_listening = 0.01
        runner, ready_after = await _cold_start(p, _deploy_app(p, "behind"))
        assert runner.ready_from == "listening signal"
        assert ready_after == pytest.approx(COLD_START + 0.01, abs=0.002)

    run(tmp_path, test)


def test_a_runner_that_says_it_too_early_is_probed_on_the_timer(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        p.backend.says_listening = -1.5  # lies: nothing answers yet
        runner, ready_after = await _cold_start(p, _deploy_app(p, "early"))
        assert runner.ready_from == "probe"
        assert ready_after == pytest.approx(COLD_START, abs=0.006)

    run(tmp_path, test)


def test_a_direct_server_is_probed_on_the_timer_even_with_a_line(tmp_path: Path) -> None:
    async def test(p: Platform) -> None:
        p.backend.says_listening = float("inf")  # the runtime cannot tell when it listens
        direct = _deploy_app(p, "direct", kind="function", exposed_port=8000)
        runner, ready_after = await _cold_start(p, direct)
        assert runner.ready_from == "probe"
        assert ready_after == pytest.approx(COLD_START, abs=0.006)
        assert p.backend.probes > 100  # every 5 ms

    run(tmp_path, test)
