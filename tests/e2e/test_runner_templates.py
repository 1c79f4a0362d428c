"""Runner templates (tidal.templates): a runner claimed from a template is isolated
exactly like a fresh one and inherits nothing from the runners before it."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tidal.observe.logs import runner_log_path
from tidal.testing import PlatformProcess, start_platform, wait_for

pytestmark = pytest.mark.slow

APP = Path(__file__).parent / "apps" / "templated"
SERVING = ("idle", "running")
ROOMY = "[host]\ncpus = 64\nmemory_mb = 131072\n"  # runners never wait for room here


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """Runners unsandboxed (`--sandbox off`); the sandboxed variant is below."""
    data_dir = tmp_path_factory.mktemp("platform")
    (data_dir / "tidal.toml").write_text(ROOMY)
    with start_platform(data_dir, ["--sandbox", "off"]) as running:
        yield running


def runners(platform: PlatformProcess, app: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(platform.cli("runners", "list", app, "--json").stdout)
    return listed


def stop_runners(platform: PlatformProcess, app: str) -> None:
    for r in runners(platform, app):
        if r["state"] in ("setup", "idle", "running"):
            platform.cli("runners", "stop", r["id"])
    wait_for(
        lambda: all(r["state"] in ("terminated", "failed") for r in runners(platform, app)),
        60, 0.05, f"{app}'s runners to stop",
    )  # fmt: skip


def template_waiting(platform: PlatformProcess) -> bool:
    return any((platform.data_dir / "runners" / "templates").glob("*.json"))


def cold_whoami(platform: PlatformProcess, app: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """GET /whoami on a new runner: (what the runner saw, its record)."""
    stop_runners(platform, app)
    with platform.http() as http:
        resp = http.get(f"/local/{app}/whoami")
    assert resp.status_code == 200, resp.text
    seen = resp.json()
    (record,) = [r for r in runners(platform, app) if r["state"] in SERVING]
    assert record["pid"] == seen["pid"]
    return seen, record


@pytest.fixture(scope="module")
def templated(platform: PlatformProcess) -> str:
    platform.cli("secrets", "set", "TEMPLATE_TEST_SECRET=first")
    platform.cli("deploy", "app.py::Templated", "--app-name", "templated", cwd=APP)
    return "templated"


def test_a_template_is_started_at_deploy(platform: PlatformProcess, templated: str) -> None:
    wait_for(lambda: template_waiting(platform), 60, 0.05, "a template to finish importing")
    status = json.loads(
        next((platform.data_dir / "runners" / "templates").glob("*.json")).read_text()
    )
    assert status["app"] == templated and status["state"] == "ready"
    assert status["rss_kib"] > 10_000  # an interpreter with FastAPI imported: what it costs
    seen, record = cold_whoami(platform, templated)
    assert record["started_from"] == "template"
    assert seen["pid"] == status["pid"]  # the template became this runner


def test_a_templated_runner_is_isolated_like_a_fresh_one(
    platform: PlatformProcess, templated: str
) -> None:
    platform.cli("deploy", "app.py::TemplatedFresh", "--app-name", "templated-fresh", cwd=APP)
    fresh, fresh_record = cold_whoami(platform, "templated-fresh")
    assert fresh_record["started_from"] == "fresh process: runner templates are off for this app"
    wait_for(lambda: template_waiting(platform), 60, 0.05, "a template to finish importing")
    forked, forked_record = cold_whoami(platform, templated)
    assert forked_record["started_from"] == "template"

    # Same identity and confinement as a fresh runner, its own where per runner.
    for same in ("uid", "gid", "ppid", "env_keys", "threads"):
        assert forked[same] == fresh[same], same
    assert forked["pgid"] == forked["sid"] == forked["pid"]  # its own session and group
    assert fresh["pgid"] == fresh["sid"] == fresh["pid"]
    assert forked["env"]["TIDAL_RUNNER_ID"] == forked_record["id"]
    assert fresh["env"]["TIDAL_RUNNER_ID"] == fresh_record["id"]
    assert forked["env"]["TIDAL_REQUEST_LOG"].endswith(f"{forked_record['id']}.requests.jsonl")
    assert forked["env"]["TEMPLATE_TEST_SECRET"] == fresh["env"]["TEMPLATE_TEST_SECRET"] == "first"
    shared = ("TIDAL_MACHINE_TYPE", "CUDA_VISIBLE_DEVICES", "HOME", "PATH")
    assert {k: forked["env"][k] for k in shared} == {k: fresh["env"][k] for k in shared}
    # What the template printed while importing leads the runner's log.
    log = runner_log_path(platform.data_dir, "local", templated, forked_record["id"]).read_text()
    assert "started from a template" in log and "running Templated.setup()" in log


def test_no_state_passes_between_runners(platform: PlatformProcess, templated: str) -> None:
    wait_for(lambda: template_waiting(platform), 60, 0.05, "a template")
    first, record = cold_whoami(platform, templated)
    assert record["started_from"] == "template"
    with platform.http() as http:
        assert http.post(f"/local/{templated}/bump").json()["bumps"] == 1
        assert http.post(f"/local/{templated}/bump").json()["bumps"] == 2
    wait_for(lambda: template_waiting(platform), 60, 0.05, "the next template")
    second, record = cold_whoami(platform, templated)
    assert record["started_from"] == "template"
    assert second["pid"] != first["pid"]
    # Imported in its own template, set up in itself, and none of the first's requests.
    assert second["state"] == {"imported_in": second["pid"], "bumps": 0, "setup_in": second["pid"]}


def test_a_changed_secret_is_not_served_from_an_old_template(
    platform: PlatformProcess, templated: str
) -> None:
    wait_for(lambda: template_waiting(platform), 60, 0.05, "a template")
    platform.cli("secrets", "set", "TEMPLATE_TEST_SECRET=second")
    seen, record = cold_whoami(platform, templated)
    assert seen["env"]["TEMPLATE_TEST_SECRET"] == "second"
    assert record["started_from"] == "fresh process: no template was waiting"


def test_a_thread_at_import_makes_runners_start_fresh(platform: PlatformProcess) -> None:
    platform.cli("deploy", "threaded.py::ThreadAtImport", "--app-name", "threaded", cwd=APP)
    with platform.http() as http:
        assert http.get("/local/threaded/").json() == {"ok": True}
    reason = "fresh process: its template was unsafe to use: the app's module started threads at import (import-time-worker)"

    def next_start() -> str:
        stop_runners(platform, "threaded")
        with platform.http() as http:
            assert http.get("/local/threaded/").json() == {"ok": True}
        (ready,) = [r for r in runners(platform, "threaded") if r["state"] in SERVING]
        return str(ready["started_from"])

    # The template that found the thread is discarded; later runners all start fresh.
    wait_for(lambda: next_start() == reason, 60, 0.1, "a runner that says why it started fresh")
    assert next_start() == reason


def test_templates_off_for_an_app(platform: PlatformProcess) -> None:
    platform.cli("deploy", "app.py::NoTemplates", "--app-name", "untemplated", cwd=APP)
    for _ in range(2):
        stop_runners(platform, "untemplated")
        with platform.http() as http:
            assert http.get("/local/untemplated/").json() == {"ok": True}
        (ready,) = [r for r in runners(platform, "untemplated") if r["state"] in SERVING]
        assert ready["started_from"] == "fresh process: runner templates are off for this app"


def templates_of(platform: PlatformProcess, app: str) -> list[dict[str, Any]]:
    """The app's waiting (imported) templates, from their status files."""
    found = []
    for path in (platform.data_dir / "runners" / "templates").glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            status = json.loads(path.read_text())
            if status["app"] == app:
                found.append(status)
    return found


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has ended


def test_a_burst_finds_a_template_each_and_the_pool_ends_with_the_app(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    platform.cli("deploy", "app.py::Pooled", "--app-name", "pooled", cwd=APP)
    wait_for(lambda: len(templates_of(platform, "pooled")) == 3, 120, 0.05, "three templates")
    pooled = {t["pid"] for t in templates_of(platform, "pooled")}
    assert all(t["rss_kib"] > 10_000 for t in templates_of(platform, "pooled"))

    def arrive(_: int) -> dict[str, Any]:
        with platform.http() as http:
            resp = http.post("/local/pooled/arrive", json={"folder": str(tmp_path), "count": 3})
        assert resp.status_code == 200, resp.text
        seen: dict[str, Any] = resp.json()
        return seen

    with ThreadPoolExecutor(3) as pool:
        seen = list(pool.map(arrive, range(3)))
    assert {s["pid"] for s in seen} == pooled  # each runner is one of the waiting templates
    serving = [r for r in runners(platform, "pooled") if r["state"] in SERVING]
    assert len(serving) == 3 and {r["started_from"] for r in serving} == {"template"}
    # Each ran its own setup() on its own state: nothing passed between them.
    assert [s["state"] for s in seen] == [
        {"imported_in": s["pid"], "bumps": 0, "setup_in": s["pid"]} for s in seen
    ]
    # The pool refills after the claims; deleting the app ends it, processes included.
    wait_for(lambda: len(templates_of(platform, "pooled")) == 3, 120, 0.05, "the pool refilled")
    refilled = {t["pid"] for t in templates_of(platform, "pooled")}
    assert not refilled & pooled
    platform.cli("apps", "delete", "pooled")
    wait_for(lambda: not templates_of(platform, "pooled") and not any(map(alive, refilled)),
             60, 0.05, "the deleted app's templates to end")  # fmt: skip


# -- in the sandbox: a template is started as the next runner's sandbox ------------------


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """The platform as the README runs it: as root, runners in the sandbox (the default)."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs the platform to run as root, as the README does")
    data_dir = tmp_path_factory.mktemp("sandboxed")
    (data_dir / "tidal.toml").write_text(ROOMY)
    with start_platform(data_dir) as running:
        running.cli("secrets", "set", "TEMPLATE_TEST_SECRET=first")
        running.cli("deploy", "app.py::Templated", "--app-name", "templated", cwd=APP)
        yield running


def waiting_template_pids(platform: PlatformProcess) -> set[int]:
    folder = platform.data_dir / "runners" / "templates"
    return {json.loads(p.read_text())["pid"] for p in folder.glob("*.json")}


def runtime_on_host(sandbox_pid: int) -> dict[str, Any]:
    """The runner's runtime process as the host sees it (the record's pid is bubblewrap)."""
    children = {sandbox_pid}
    found: list[int] = []
    for _ in range(6):  # bwrap -> its init -> the runtime (setpriv and sh exec into it)
        nxt: set[int] = set()
        for pid in children:
            for task in Path(f"/proc/{pid}/task").iterdir():
                nxt |= {int(c) for c in (task / "children").read_text().split()}
        found += [p for p in nxt if b"tidal.runtime" in Path(f"/proc/{p}/cmdline").read_bytes()]
        children = nxt

    def uid_of(pid: int) -> int:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Uid:")).split()[1])

    (runtime,) = [p for p in found if uid_of(p) != 0]  # bubblewrap's own run as root
    uid = uid_of(runtime)
    cgroups = {
        c.split(":", 2)[1]: c.split(":", 2)[2]
        for c in Path(f"/proc/{runtime}/cgroup").read_text().splitlines()
        if c.split(":", 2)[2] != "/"
    }
    memory = Path("/sys/fs/cgroup/memory", cgroups.get("memory", "/").lstrip("/"))
    limit = memory / "memory.limit_in_bytes"  # cgroup v1's, as on this machine
    return {
        "pid": runtime,
        "memory_limit": limit.read_text() if limit.exists() else None,
        "uid": uid,
        "cgroups": cgroups,
        "netns": os.readlink(f"/proc/{runtime}/ns/net"),
        "pidns": os.readlink(f"/proc/{runtime}/ns/pid"),
    }


def cold_sandboxed(platform: PlatformProcess, app: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """GET /whoami on a new sandboxed runner: (what it saw, its record + host view)."""
    stop_runners(platform, app)
    with platform.http() as http:
        resp = http.get(f"/local/{app}/whoami")
    assert resp.status_code == 200, resp.text
    (record,) = [r for r in runners(platform, app) if r["state"] in SERVING]
    return resp.json(), {**record, "host": runtime_on_host(record["pid"])}


def test_a_sandboxed_templated_runner_is_confined_like_a_fresh_one(
    sandboxed: PlatformProcess,
) -> None:
    # A fresh runner of the same app (its uid is the app's): a changed secret makes
    # the waiting template unusable, so the next runner starts fresh.
    wait_for(lambda: template_waiting(sandboxed), 60, 0.05, "a sandboxed template")
    old = waiting_template_pids(sandboxed)
    sandboxed.cli("secrets", "set", "TEMPLATE_TEST_SECRET=second")
    fresh, fresh_record = cold_sandboxed(sandboxed, "templated")
    assert fresh_record["started_from"] == "fresh process: no template was waiting"
    wait_for(
        lambda: waiting_template_pids(sandboxed) - old, 60, 0.05, "a template with the new secret"
    )
    forked, forked_record = cold_sandboxed(sandboxed, "templated")
    assert forked_record["started_from"] == "template"

    # Same identity, environment and confinement as a fresh sandboxed runner.
    for same in ("uid", "gid", "ppid", "pid", "env_keys", "threads"):
        assert forked[same] == fresh[same], same
    assert forked["env"]["TIDAL_RUNNER_ID"] == forked_record["id"]
    shared = ("TIDAL_MACHINE_TYPE", "CUDA_VISIBLE_DEVICES", "HOME", "PATH", "TEMPLATE_TEST_SECRET")
    assert {k: forked["env"][k] for k in shared} == {k: fresh["env"][k] for k in shared}
    assert forked["env"]["TEMPLATE_TEST_SECRET"] == "second"
    host_fresh, host_forked = fresh_record["host"], forked_record["host"]
    assert host_forked["uid"] == host_fresh["uid"] != 0  # the app's own uid
    own_netns = os.readlink("/proc/self/ns/net")
    assert len({own_netns, host_fresh["netns"], host_forked["netns"]}) == 3
    assert host_forked["pidns"] != host_fresh["pidns"]
    # Its cgroup is the one made for it (at prestart), beside a fresh runner's, limited
    # alike, and holding its processes only.
    assert host_fresh["cgroups"] and host_forked["cgroups"].keys() == host_fresh["cgroups"].keys()
    for controllers, path in host_forked["cgroups"].items():
        fresh_path = host_fresh["cgroups"][controllers]
        assert Path(fresh_path).name == fresh_record["id"]
        assert (
            Path(path).name.startswith("template-") and Path(path).parent == Path(fresh_path).parent
        )
    assert host_forked["memory_limit"] == host_fresh["memory_limit"]
    # Its request log is the runner's file on the host, owned by the app's uid.
    request_log = runner_log_path(
        sandboxed.data_dir, "local", "templated", forked_record["id"]
    ).with_suffix(".requests.jsonl")
    assert request_log.stat().st_uid == host_forked["uid"]
    assert forked["env"]["TIDAL_REQUEST_LOG"] != fresh["env"]["TIDAL_REQUEST_LOG"]
    log = runner_log_path(sandboxed.data_dir, "local", "templated", forked_record["id"]).read_text()
    assert "started from a template" in log and "running Templated.setup()" in log


def test_no_state_passes_between_sandboxed_runners(sandboxed: PlatformProcess) -> None:
    wait_for(lambda: template_waiting(sandboxed), 60, 0.05, "a sandboxed template")
    _first, record = cold_sandboxed(sandboxed, "templated")
    assert record["started_from"] == "template"
    with sandboxed.http() as http:
        assert http.post("/local/templated/bump").json()["bumps"] == 1
        assert http.post("/local/templated/bump").json()["bumps"] == 2
    wait_for(lambda: template_waiting(sandboxed), 60, 0.05, "the next sandboxed template")
    second, second_record = cold_sandboxed(sandboxed, "templated")
    assert second_record["started_from"] == "template"
    assert second_record["host"]["pid"] != record["host"]["pid"]
    assert second_record["host"]["netns"] != record["host"]["netns"]
    assert second_record["host"]["cgroups"] != record["host"]["cgroups"]
    # Imported and set up in its own process, and none of the first's requests.
    assert second["state"] == {"imported_in": second["pid"], "bumps": 0, "setup_in": second["pid"]}


def group_of(pid: int) -> set[int]:
    """`pid` and every process below it, now."""
    found, frontier = {pid}, {pid}
    while frontier:
        children: set[int] = set()
        for parent in frontier:
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{parent}/task").iterdir():
                    children |= {int(c) for c in (task / "children").read_text().split()}
        frontier = children - found
        found |= children
    return found


def template_cgroups(pids: set[int]) -> set[Path]:
    """The cgroup folders made for templates (named by template id) holding these."""
    folders = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                if Path(path).name.startswith("template-"):
                    mount = controllers.split(",")[0] if controllers else "unified"
                    folders.add(Path("/sys/fs/cgroup", mount, path[1:]))
    return folders


def test_sandboxed_templates_end_with_their_revision_and_the_platform(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Checked, not trusted: a new revision's deploy ends the old revision's pool, and
    stopping the platform ends the rest; no process, no cgroup of theirs is left."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs the platform to run as root, as the README does")
    data_dir = tmp_path_factory.mktemp("sandboxed-pool")
    (data_dir / "tidal.toml").write_text(ROOMY)
    with start_platform(data_dir) as platform:
        platform.cli("deploy", "app.py::Pooled", "--app-name", "pooled", cwd=APP)
        wait_for(lambda: len(templates_of(platform, "pooled")) == 3, 120, 0.05, "three templates")
        first = {p for t in templates_of(platform, "pooled") for p in group_of(t["pid"])}
        first_cgroups = template_cgroups(first)
        assert len(first) > 3 and len(first_cgroups) >= 3  # sandboxes: bwrap and what it runs
        platform.cli("deploy", "app.py::Pooled", "--app-name", "pooled", cwd=APP)  # revision 2
        wait_for(lambda: not any(map(alive, first)), 60, 0.05, "revision 1's templates to end")
        wait_for(lambda: not [c for c in first_cgroups if c.exists()], 60, 0.05,
                 f"revision 1's template cgroups to go: {sorted(first_cgroups)}")  # fmt: skip
        wait_for(lambda: {t["revision"] for t in templates_of(platform, "pooled")} == {2}
                 and len(templates_of(platform, "pooled")) == 3, 120, 0.05, "revision 2's pool")  # fmt: skip
        second = {p for t in templates_of(platform, "pooled") for p in group_of(t["pid"])}
        second_cgroups = template_cgroups(second)
    assert not [p for p in second if alive(p)], "templates outlived the platform"
    assert not [c for c in second_cgroups if c.exists()], "template cgroups outlived the platform"
