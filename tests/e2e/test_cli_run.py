"""`tidal run`: an ephemeral app on an embedded platform the command starts itself."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tidal.backends.local import free_port
from tidal.testing import wait_for

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).parents[2] / "examples" / "direct_server"


def ignoring_sigint() -> None:
    """As a shell starts a background job (`tidal run ... &`): SIGINT ignored, which the
    child inherits. `tidal run` must still stop on it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class TidalRun:
    """`tidal run ARGS` in `cwd` on an embedded platform of its own, its output read
    into `lines` as it comes."""

    def __init__(self, cwd: Path, *args: str, preexec_fn: Callable[[], None] | None = None) -> None:
        env = {**os.environ, "TIDAL_URL": f"http://127.0.0.1:{free_port()}", "COLUMNS": "200"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidal", "run", *args], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=preexec_fn,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(self.proc.stdout or []), daemon=True
        )
        self._reader.start()

    def url(self, timeout: float = 60) -> str:
        """The app's URL, once it has printed it."""
        found = r"at (http://\S+)"
        return wait_for(
            lambda: next((m.group(1) for line in self.lines if (m := re.search(found, line))), None),
            timeout=timeout, what="tidal run to print the app's URL",
        )  # fmt: skip

    def printed(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def stopped(self, signum: int) -> int:
        """Its exit code once `signum` stopped it; killed (and the test failed) if it
        did not stop within a minute, so no platform outlives the test."""
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # its embedded platform dies with it (parent-death signal)
            self.proc.wait()
            raise
        finally:
            self.close()

    def killed(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.close()

    def close(self) -> None:
        self._reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    """Running (a zombie no one has reaped yet has stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_run_starts_a_platform_deploys_serves_and_cleans_up(signum: int) -> None:
    run = TidalRun(EXAMPLE, "app.py::run_server", preexec_fn=ignoring_sigint)
    try:
        url = run.url()
        assert url.endswith("/local/run-server")
        resp = httpx.get(f"{url}/", timeout=60)
        assert resp.json() == {"hello": "world"}
        # The runner's log lines stream to the terminal.
        wait_for(lambda: run.printed("Application startup complete"), timeout=10)
        platform_url = url.rsplit("/local/", 1)[0]
    finally:
        code = run.stopped(signum)
    assert code == 0, "".join(run.lines)
    assert run.printed("Removed run-server")
    with pytest.raises(httpx.ConnectError):  # the embedded platform is gone too
        httpx.get(f"{platform_url}/api/v1/health", timeout=2)


def test_run_reload_picks_up_an_edit_with_no_failed_call(tmp_path: Path) -> None:
    """`tidal run --reload` of an App: an edit becomes a new revision, rolled out
    ready-first, while a client keeps calling; no call fails, /data is kept."""
    folder = tmp_path / "reloadable"
    shutil.copytree(Path(__file__).parent / "apps" / "reloadable", folder)
    run = TidalRun(folder, "app.py::Reloadable", "--reload")
    calls: list[tuple[int, str]] = []
    failures: list[str] = []
    stop = threading.Event()
    try:
        url = run.url(timeout=90)
        wait_for(lambda: run.printed("Watching"), timeout=10)
        with httpx.Client(base_url=url, timeout=60) as http:
            assert http.post("/remember", json={"text": "kept across reloads"}).status_code == 200

            def keep_calling() -> None:
                while not stop.is_set():
                    try:
                        resp = http.get("/version")
                        if resp.status_code != 200:
                            failures.append(f"{resp.status_code} {resp.text}")
                        else:
                            calls.append((resp.status_code, resp.json()["version"]))
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                    time.sleep(0.02)

            caller = threading.Thread(target=keep_calling)
            caller.start()
            wait_for(lambda: len(calls) >= 5, timeout=30, what="calls to v1")
            app_py = folder / "app.py"
            app_py.write_text(app_py.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
            wait_for(
                lambda: calls and calls[-1][1] == "v2", timeout=90, what="the edit to be served"
            )
            stop.set()
            caller.join(30)
            assert http.get("/recall").json() == {"note": "kept across reloads"}
        assert not failures, failures[:5]
        versions = [v for _, v in calls]
        assert versions[0] == "v1" and versions[-1] == "v2"
        # Once the new revision answers, the old one is no longer routed to.
        assert "v1" not in versions[versions.index("v2") + 5 :]
        wait_for(lambda: run.printed("revision 2 live in"), timeout=30)
    finally:
        stop.set()
        code = run.stopped(signal.SIGINT)
    print("".join(line for line in run.lines if "revision" in line or "changed" in line))
    assert code == 0, "".join(run.lines)
    assert run.printed("app.py changed: redeploying"), "".join(run.lines)
    assert run.printed("Removed reloadable")


def test_a_killed_run_takes_its_embedded_platform_with_it() -> None:
    """SIGKILL leaves `tidal run` no time to clean up; its embedded platform still
    stops (it gets SIGTERM when its parent dies) and so do the platform's runners."""
    run = TidalRun(EXAMPLE, "app.py::run_server")
    try:
        url = run.url()
        assert httpx.get(f"{url}/", timeout=60).json() == {"hello": "world"}
        (platform,) = children(run.proc.pid)
        runners = children(platform)
        assert runners, "the platform's runner (and its template) are its children"
    finally:
        run.killed()
    wait_for(lambda: not any(alive(pid) for pid in [platform, *runners]), timeout=60,
             what="the embedded platform and its runners to stop")  # fmt: skip
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url.rsplit('/local/', 1)[0]}/api/v1/health", timeout=2)
