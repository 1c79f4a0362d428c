"""Runner templates under test: what each runner sees of its identity, and whether
state from one runner reaches another."""

import asyncio
import os
import threading
import time
from pathlib import Path

from pydantic import BaseModel

import tidal

# Set at import (in the template, for a templated runner), changed by requests.
STATE = {"imported_in": os.getpid(), "bumps": 0}


def identity() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pgid": os.getpgrp(),
        "sid": os.getsid(0),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "netns": os.readlink("/proc/self/ns/net"),
        "env": {
            k: os.environ.get(k)
            for k in (
                "TIDAL_RUNNER_ID",
                "TIDAL_APP",
                "TIDAL_REQUEST_LOG",
                "TIDAL_MACHINE_TYPE",
                "CUDA_VISIBLE_DEVICES",
                "TEMPLATE_TEST_SECRET",
                "HOME",
                "PATH",
            )
        },
        "env_keys": sorted(os.environ),
        "threads": sorted(t.name for t in threading.enumerate()),
        "state": dict(STATE),
    }


class Templated(tidal.App, keep_alive=300, max_concurrency=1):
    def setup(self) -> None:
        STATE["setup_in"] = os.getpid()

    @tidal.endpoint("/whoami", method="GET")
    def whoami(self) -> dict[str, object]:
        return identity()

    @tidal.endpoint("/bump", method="POST")
    def bump(self) -> dict[str, object]:
        STATE["bumps"] += 1
        return dict(STATE)


class TemplatedFresh(Templated, runner_templates=False):
    """The same app, every runner a fresh process: what a templated runner must equal."""


class NoTemplates(tidal.App, keep_alive=300, max_concurrency=1, runner_templates=False):
    @tidal.endpoint("/", method="GET")
    def hello(self) -> dict[str, object]:
        return {"ok": True}


class Arrival(BaseModel):
    folder: str  # each request marks its arrival here ...
    count: int  # ... and waits until this many have arrived (each on its own runner)


class Pooled(Templated, max_concurrency=3, runner_templates=3):
    """Three templates wait per revision: a burst of three cold requests finds one each."""

    @tidal.endpoint("/arrive", method="POST")
    async def arrive(self, arrival: Arrival) -> dict[str, object]:
        Path(arrival.folder, str(os.getpid())).touch()
        deadline = time.monotonic() + 120
        while len(os.listdir(arrival.folder)) < arrival.count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return identity()
