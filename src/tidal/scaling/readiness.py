"""Watching a launched runner: until its server answers (SETUP -> IDLE), while it
serves (health checks, a suspect connection), and when it exits on its own."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from tidal.control.openapi import openapi_problem
from tidal.domain.runner import SERVING, STARTING, Runner, RunnerState
from tidal.observe.logs import tail

if TYPE_CHECKING:
    from tidal.domain.deployment import Deployment
    from tidal.scaling.controller import Controller
    from tidal.spec import AppSpec


# A runner that will say when it listens is probed this often meanwhile, in case its
# word is lost; a probe that answers first waits this long for the word (which may be
# on its way), so the record says how readiness was learned. A runner that said it
# too early is probed on the timer like any other, and its record says "probe".
SIGNAL_BACKSTOP_S = 1.0
SIGNAL_GRACE_S = 0.25
READY_FROM_SIGNAL = "listening signal"
READY_FROM_PROBE = "probe"


def probe_pause(waited: float) -> float:
    """Probing a closed port costs little: probe often while a start is young, since
    every millisecond here is cold-start latency."""
    return 0.005 if waited < 2 else 0.05 if waited < 10 else 0.25


def says_when_listening(spec: AppSpec) -> bool:
    """Whether tidal's runtime serves the app (an App, or a plain function) and says
    when its server listens; a direct server (`exposed_port`, `serve`) is the user's
    own, and an image-only app runs its own command."""
    if spec.kind == "app":
        return True
    options = spec.options
    return spec.kind == "function" and options.exposed_port is None and not options.serve


def listening_signal(ctl: Controller, dep: Deployment, runner: Runner) -> asyncio.Event | None:
    """Set once the runner says its server listens; None: it will not say (the kind
    of app, or a backend without a line to it), so it is probed on a timer."""
    if not says_when_listening(dep.record.spec):
        return None
    listening = getattr(ctl.runner_backend(runner), "listening", None)
    said: asyncio.Event | None = listening(runner) if listening is not None else None
    return said


async def wait_ready(ctl: Controller, dep: Deployment, runner: Runner) -> None:
    options = dep.record.options
    timeout = options.startup_timeout or ctl.config.default_startup_timeout
    started = ctl.clock.monotonic()
    assert runner.address is not None
    said = listening_signal(ctl, dep, runner)
    noticed = False  # a probe has followed the runner's word already
    while runner.state in STARTING:
        heard = said is not None and said.is_set() and not noticed  # this probe follows it
        noticed = noticed or heard
        if await ctl.prober.answers(runner.address, 1.0):
            if said is not None and not said.is_set():  # a backstop probe beat its word
                heard = await ctl.clock.wait(said, SIGNAL_GRACE_S)
            if runner.state not in STARTING:
                return  # stopped or ended while the probe ran
            runner.ready_from = READY_FROM_SIGNAL if heard else READY_FROM_PROBE
            runner.transition(RunnerState.IDLE, at=ctl.clock.time())
            runner.idle_since = ctl.clock.monotonic()
            dep.failures = 0
            dep.router.add(runner)
            dep.wake.set()
            after_ready(ctl, dep, runner)
            return
        if ctl.runner_backend(runner).exited(runner) or runner.state not in STARTING:
            return  # watch_exit or the stop records why
        waited = ctl.clock.monotonic() - started
        if waited >= timeout:
            port = options.exposed_port or runner.address.port
            reason = f"did not answer HTTP on port {port} within startup_timeout ({timeout}s)"
            runner.reason = reason  # shown while it stops
            # Answer the waiting requests now, not after the stop's grace period.
            ctl.failed_start(dep, f"runner {runner.id} {reason}", failed=runner)
            await ctl.retire(dep, runner, RunnerState.FAILED, reason, count_failure=False)
            return
        # A runner that will say when it listens is probed the moment it does (and, as a
        # backstop, now and then); the others, and one that said so too early, on a timer.
        if said is None or noticed:
            await ctl.clock.sleep(probe_pause(waited))
        else:
            await ctl.clock.wait(said, SIGNAL_BACKSTOP_S)


def after_ready(ctl: Controller, dep: Deployment, runner: Runner) -> None:
    # The local sandbox lets a starting runner use more CPU than its machine type
    # (imports are most of a cold start); from now on it gets its type's share.
    getattr(ctl.runner_backend(runner), "runner_ready", lambda r: None)(runner)
    spec = dep.record.spec
    if spec.health_check is not None and spec.health_check.call_regularly:
        ctl.spawn(health_loop(ctl, dep, runner))
    if spec.kind in ("function", "image") and spec.openapi is None and dep.openapi_wanted:
        dep.openapi_wanted = False  # once per revision
        ctl.spawn(fetch_openapi(ctl, dep, runner))


async def health_loop(ctl: Controller, dep: Deployment, runner: Runner) -> None:
    """Call the App's health check; after `failure_threshold` failures in a row
    (once `start_period_seconds` have passed) the runner is replaced."""
    check = dep.record.spec.health_check
    assert check is not None and runner.address is not None
    await ctl.clock.sleep(
        max(0.0, check.start_period_seconds - (ctl.clock.time() - runner.created_at))
    )
    failures = 0
    while runner.state in SERVING:
        try:
            status, _ = await ctl.prober.request(
                runner.address, check.method, check.path, check.timeout_seconds
            )
            problem = "" if 200 <= status < 300 else f"HTTP {status}"
        except (OSError, TimeoutError) as exc:
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        failures = failures + 1 if problem else 0
        if failures >= check.failure_threshold:
            await ctl.retire(dep, runner, RunnerState.FAILED,
                             f"health check {check.path} failed {failures} times in a row "
                             f"(last: {problem})")  # fmt: skip
            return
        await ctl.clock.sleep(ctl.config.health_check_interval_seconds)


async def fetch_openapi(ctl: Controller, dep: Deployment, runner: Runner) -> None:
    """A direct server's own /openapi.json, if it serves one, becomes the app's."""
    assert runner.address is not None
    try:
        status, body = await ctl.prober.request(runner.address, "GET", "/openapi.json", 5.0)
        document = json.loads(body) if status == 200 else None
    except (OSError, TimeoutError, ValueError):
        return
    if document is not None and openapi_problem(document) is None:
        for listener in ctl.on_openapi_found:
            listener(dep.record, document)


async def check_suspect(ctl: Controller, dep: Deployment, runner: Runner) -> None:
    """A connection to the runner failed: back in rotation if it still answers,
    else replaced."""
    if runner.address and await ctl.prober.answers(runner.address, 1.0):
        runner.suspect = False
        dep.router.dispatch()
        return
    await ctl.retire(dep, runner, RunnerState.FAILED,
                     "the server stopped answering while serving a request")  # fmt: skip


async def watch_exit(ctl: Controller, dep: Deployment, runner: Runner) -> None:
    backend = ctl.runner_backend(runner)
    code = await backend.wait_exit(runner)
    if runner.state is RunnerState.TERMINATING or not runner.live:
        return
    # The backend may know better than the log why it ended (its memory limit).
    known = getattr(backend, "exit_reason", lambda r: None)(runner)
    last = [line for line in tail(runner.log_path, 20) if line.strip()]
    hint = f": {last[-1].strip()}" if last else ""
    ctl.end(dep, runner, RunnerState.FAILED, known or f"exited with status {code}{hint}")
