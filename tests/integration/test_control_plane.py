"""The control plane at scale, with the platform in-process: the apps listing in pages,
and no database statement of the control API or the dashboard's API run on the event
loop (where it would stall every request the gateway is serving)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import threading
import time
import traceback
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event

from tidal.backends.local import free_port
from tidal.config import PlatformConfig
from tidal.testing import platform_in_thread

APP_PY = b"""
import tidal

@tidal.function(exposed_port=8000, keep_alive=30)
def hello() -> None:
    import subprocess, sys
    subprocess.run([sys.executable, "-m", "http.server", "8000", "--bind", "127.0.0.1"], check=True)
"""


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[httpx.Client]:
    config = PlatformConfig(
        auth=False, data_dir=tmp_path, database_url=database_url, port=free_port(),
        machines={"host": {"cpus": 64, "memory_mb": 65536}},
    )  # fmt: skip
    with platform_in_thread(config), httpx.Client(base_url=config.url, timeout=30) as client:
        yield client


def upload(api: httpx.Client) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", APP_PY)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    api.put(f"/api/v1/bundles/{digest}", content=buf.getvalue()).raise_for_status()
    return digest


def deploy(api: httpx.Client, digest: str, name: str) -> dict[str, Any]:
    body = {"spec": {"name": name, "entry": "app.py::hello", "kind": "function",
                     "bundle_digest": digest, "options": {"exposed_port": 8000}}}  # fmt: skip
    resp = api.post("/api/v1/apps", json=body)
    assert resp.status_code == 201, resp.text
    view: dict[str, Any] = resp.json()
    return view


def test_apps_are_listed_in_pages_that_follow_on(api: httpx.Client) -> None:
    digest = upload(api)
    names = [f"app-{i:02d}" for i in range(7)]
    for name in reversed(names):
        deploy(api, digest, name)
    api.patch("/api/v1/apps/app-03/scaling", json={"keep_alive": 7}).raise_for_status()
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(4):
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        resp = api.get("/api/v1/apps", params=params)
        assert resp.status_code == 200, resp.text
        seen += resp.json()
        cursor = resp.headers.get("x-next-cursor")
        if cursor is None:
            break
        assert f"cursor={cursor.replace('/', '%2F')}" in resp.headers["link"]
    assert [v["name"] for v in seen] == names  # in order, none twice, none missed
    assert seen[3]["options"]["keep_alive"] == 7 and seen[3]["scaling_overrides"]
    assert {v["revision"] for v in seen} == {1} and seen[0]["runners"]["ready"] == 0
    # The default page holds them all; the whole answer matches one app's own view.
    everything = api.get("/api/v1/apps")
    assert "x-next-cursor" not in everything.headers and len(everything.json()) == 7
    shown = api.get("/api/v1/apps/app-05").json()
    assert everything.json()[5] == shown
    bad = api.get("/api/v1/apps", params={"cursor": "no-slash"})
    assert bad.status_code == 422 and "X-Next-Cursor" in bad.json()["detail"]
    assert api.get("/api/v1/apps", params={"limit": 0}).status_code == 422
    assert api.get("/api/v1/apps", params={"limit": 5000}).status_code == 422


class LoopStatements:
    """Every SQL statement run on a thread that is running an event loop, with where
    it came from (statements in a thread pool are fine: the loop goes on)."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.watching = False

    def __call__(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not self.watching:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not on an event loop's thread
        stack = "".join(traceback.format_stack(limit=25))
        self.found.append(f"{statement[:80]!r} on {threading.current_thread().name}:\n{stack}")


class LoopCPU:
    """The platform's event loop, watched from a task on it that wakes every ms: the
    loop's thread CPU time between two wakes is what the callbacks in between took
    (CPU time, not wall time: a busy machine that preempts the loop does not count).

    Less the garbage collector's passes on that thread: the platform runs inside pytest
    here, so a collection may walk objects pytest made (a full pass over a pytest-sized
    heap takes ~90 ms on these machines), which a platform process of its own, its
    start-up heap frozen, does not have."""

    # More than this of CPU without a break holds up every request the gateway serves.
    # A coarse bound: the loop's own first calls and runner-template spawns after a
    # deploy take up to ~15 ms here; a page of views built on the loop, a handler
    # doing a thread's work, take far more (the statements check above is the fine one).
    LIMIT_SECONDS = 0.05

    def __init__(self) -> None:
        self.slow: list[float] = []
        self.beats = 0
        self.watching = False
        self.task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        loop_thread = threading.get_ident()
        collecting = {"since": 0.0, "spent": 0.0}

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if threading.get_ident() != loop_thread:
                return
            if phase == "start":
                collecting["since"] = time.thread_time()
            else:
                collecting["spent"] += time.thread_time() - collecting["since"]

        gc.callbacks.append(on_gc)
        try:
            last = time.thread_time()
            while True:
                await asyncio.sleep(0.001)
                now = time.thread_time()
                took, collecting["spent"] = now - last - collecting["spent"], 0.0
                if self.watching:
                    self.beats += 1
                    if took > self.LIMIT_SECONDS:
                        self.slow.append(took)
                last = now
        finally:
            gc.callbacks.remove(on_gc)


@pytest.fixture
def loop_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopCPU]:
    """Watches the loop of the platform the test starts next (its startup starts it)."""
    from tidal.server import Platform

    seen = LoopCPU()
    startup = Platform.startup

    async def started(self: Platform) -> None:
        await startup(self)
        seen.task = asyncio.create_task(seen.beat())

    monkeypatch.setattr(Platform, "startup", started)
    yield seen


@pytest.fixture
def on_loop() -> Iterator[LoopStatements]:
    seen = LoopStatements()
    event.listen(Engine, "before_cursor_execute", seen)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", seen)


def test_no_control_plane_statement_runs_on_the_event_loop(
    loop_cpu: LoopCPU, api: httpx.Client, on_loop: LoopStatements
) -> None:
    """Nor does any handler hold the loop: it never runs more than 50 ms of CPU without
    a break (a page of views built on it, a handler doing a thread's work, would)."""
    digest = upload(api)
    for i in range(60):  # pages of many apps: their views must not be built on the loop
        deploy(api, digest, f"filler-{i:02d}")
    on_loop.watching = loop_cpu.watching = True
    for _ in range(3):
        assert len(api.get("/api/v1/apps", params={"limit": 1000}).json()) == 60
    deploy(api, digest, "first")
    deploy(api, digest, "second")
    assert len(api.get("/api/v1/apps", params={"limit": 1}).json()) == 1
    assert api.get("/api/v1/apps/first").json()["revision"] == 1
    api.patch("/api/v1/apps/first/scaling", json={"keep_alive": 5}).raise_for_status()
    api.post("/api/v1/apps/first/restart").raise_for_status()
    api.get("/api/v1/apps/first/revisions").raise_for_status()
    api.post("/api/v1/apps/first/rollback", json={"revision": 1}).raise_for_status()
    api.get("/api/v1/apps/first/runners").raise_for_status()
    api.get("/api/v1/apps/first/logs").raise_for_status()
    api.put("/api/v1/secrets/TOKEN", json={"value": "s3cret"}).raise_for_status()
    api.get("/api/v1/secrets").raise_for_status()
    api.delete("/api/v1/secrets/TOKEN").raise_for_status()
    key = api.post("/api/v1/keys", json={"scope": "invoke"}).json()
    api.get("/api/v1/keys").raise_for_status()
    api.delete(f"/api/v1/keys/{key['id']}").raise_for_status()
    api.get("/api/v1/analytics/apps").raise_for_status()
    api.get("/api/v1/apps/first/analytics").raise_for_status()
    api.get("/api/v1/requests").raise_for_status()
    api.get("/api/v1/errors").raise_for_status()
    # The dashboard's API is the control API, in-process.
    ui = {"x-tidal-dashboard": "1"}
    assert api.get("/dashboard/api/v1/apps", headers=ui).status_code == 200
    # The queue's hot path: submit, status (both ways), cancel, result. (Its runner
    # may come up meanwhile: each request may be at any stage.)
    queued = [api.post("/queue/local/second/", json={}).json() for _ in range(3)]
    base = "/queue/local/second/requests"
    for q in queued:
        assert api.get(f"{base}/{q['request_id']}/status").status_code in (200, 202)
        assert api.get(f"{base}/{q['request_id']}/status?logs=1").status_code in (200, 202)
    assert api.put(f"{base}/{queued[0]['request_id']}/cancel").status_code in (202, 400)
    assert api.get(f"{base}/{queued[0]['request_id']}").status_code in (200, 400, 500, 501)
    api.delete("/api/v1/apps/second").raise_for_status()
    on_loop.watching = loop_cpu.watching = False
    assert not on_loop.found, "\n\n".join(on_loop.found)
    # It watched, to the end: the heartbeat ran while watching and is running still (how
    # many beats that makes depends on the machine's speed, so no count is asserted).
    assert loop_cpu.beats > 0 and loop_cpu.task is not None and not loop_cpu.task.done()
    assert not loop_cpu.slow, (
        f"the event loop ran {', '.join(f'{c * 1000:.0f}' for c in loop_cpu.slow)} ms of CPU "
        "without a break"
    )


def test_an_apps_limits_are_shown_and_max_waiting_is_settable(api: httpx.Client) -> None:
    deploy(api, upload(api), "limited")
    limits = api.get("/api/v1/apps/limited").json()["limits"]
    assert limits == {"max_waiting": 1000, "request_timeout": 3600,
                      "queue_result_ttl_seconds": 7 * 24 * 3600,
                      "queue_results_per_app": 10_000}  # fmt: skip
    resp = api.patch("/api/v1/apps/limited/scaling", json={"max_waiting": 5})
    assert resp.status_code == 200 and resp.json()["limits"]["max_waiting"] == 5
    assert "max_waiting" not in resp.json()["options"]  # a platform setting, not fal's
    for bad in (0, 10**9, "many", 2.5):
        resp = api.patch("/api/v1/apps/limited/scaling", json={"max_waiting": bad})
        assert resp.status_code == 422 and "max_waiting must be" in resp.json()["detail"]
    # It outlives a redeploy, like the other live changes, until reset with null.
    deploy(api, upload(api), "limited")
    assert api.get("/api/v1/apps/limited").json()["limits"]["max_waiting"] == 5
    resp = api.patch("/api/v1/apps/limited/scaling", json={"max_waiting": None})
    assert resp.json()["limits"]["max_waiting"] == 1000


def test_key_and_session_checks_read_the_database_off_the_event_loop(
    tmp_path: Path, database_url: str, on_loop: LoopStatements, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With auth on, every check whose key or session is not cached (a first use, one
    revalidated, an unknown or revoked one, a browser link, a dashboard session) reads
    the database in a thread, and the writes a check owes (last use, last visit) go to a
    thread too. Caches expire at once here, so every request takes the reading path."""
    from tidal.control import keys
    from tidal.dashboard import sessions

    monkeypatch.setattr(keys, "REVALIDATE_SECONDS", 0.0)
    monkeypatch.setattr(keys, "LAST_USED_WRITE_SECONDS", 0.0)
    monkeypatch.setattr(sessions, "REVALIDATE_SECONDS", 0.0)
    monkeypatch.setattr(sessions, "SEEN_WRITE_SECONDS", 0.0)
    config = PlatformConfig(
        auth=True, data_dir=tmp_path, database_url=database_url, port=free_port(),
        machines={"host": {"cpus": 64, "memory_mb": 65536}},
    )  # fmt: skip
    with platform_in_thread(config):
        admin = (tmp_path / keys.ADMIN_KEY_FILE).read_text().strip()
        with httpx.Client(base_url=config.url, timeout=60,
                          headers={"authorization": f"Key {admin}"}) as api:  # fmt: skip
            digest = upload(api)
            deploy(api, digest, "private")
            invoke = api.post("/api/v1/keys", json={"scope": "invoke"}).json()
            revoked = api.post("/api/v1/keys", json={"scope": "invoke"}).json()
            api.delete(f"/api/v1/keys/{revoked['id']}").raise_for_status()
            link = api.post("/api/v1/apps/private/open").json()["url"]
        on_loop.watching = True
        with httpx.Client(base_url=config.url, timeout=60) as anyone:
            for key, status in ((admin, 200), (invoke["key"], 403), (revoked["key"], 401),
                                ("tk_000000000000:unknown", 401)):  # fmt: skip
                resp = anyone.get("/api/v1/apps", headers={"authorization": f"Key {key}"})
                assert resp.status_code == status, resp.text
            queued = anyone.post("/queue/local/private/", json={},
                                 headers={"authorization": f"Key {invoke['key']}"})  # fmt: skip
            assert queued.status_code == 200, queued.text
            # A browser session for the app, from a one-time link; a made-up one fails.
            opened = anyone.get(link.replace(config.url, ""))
            assert opened.status_code == 303, opened.text
            cookie = opened.headers["set-cookie"].split(";")[0]
            assert anyone.get("/local/private/", headers={"cookie": cookie}).status_code == 200
            made_up = anyone.get("/local/private/", headers={"cookie": "tidal_app=made-up"})
            assert made_up.status_code == 401
            # A dashboard session: sign in, use its API, sign out.
            signed = anyone.post("/dashboard/login", data={"key": admin})
            assert signed.status_code == 303, signed.text
            session = {"cookie": signed.headers["set-cookie"].split(";")[0],
                       "x-tidal-dashboard": "1"}  # fmt: skip
            assert anyone.get("/dashboard/api/v1/apps", headers=session).status_code == 200
            assert anyone.post("/dashboard/logout", headers=session).status_code == 200
            assert anyone.get("/dashboard/api/v1/apps", headers=session).status_code == 401
        on_loop.watching = False
    assert not on_loop.found, "\n\n".join(on_loop.found)
