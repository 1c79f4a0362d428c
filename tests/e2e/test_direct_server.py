"""Direct server mode, driven through the `tidal` CLI against a real platform
process, with real uvicorn servers as the users' apps."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tidal.testing import PlatformProcess, start_platform, wait_for

pytestmark = pytest.mark.slow

# The seed pattern is the shipped example itself.
SEED = Path(__file__).parents[2] / "examples" / "direct_server"


def deploy(platform: PlatformProcess, folder: Path, target: str, *extra: str) -> dict[str, Any]:
    done = platform.cli("deploy", target, "--json", *extra, cwd=folder)
    view: dict[str, Any] = json.loads(done.stdout)
    return view


def runners(platform: PlatformProcess, app: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(platform.cli("runners", "list", app, "--json").stdout)
    return out


def live(platform: PlatformProcess, app: str) -> list[dict[str, Any]]:
    return [r for r in runners(platform, app) if r["state"] in ("setup", "idle", "running")]


def test_seed_pattern_deploys_and_answers(platform: PlatformProcess, apps_dir: Path) -> None:
    done = platform.cli("deploy", "app.py::run_server", cwd=SEED)
    url = f"{platform.url}/local/run-server"
    assert url in done.stdout
    assert live(platform, "run-server") == []  # nothing runs before the first request
    with platform.http() as http:
        resp = http.get("/local/run-server/")
        assert resp.status_code == 200
        assert resp.json() == {"hello": "world"}
        assert len(resp.headers["x-tidal-request-id"]) == 32
        assert resp.headers["server"] == "uvicorn"  # the user's server's own headers
    show = json.loads(platform.cli("apps", "show", "run-server", "--json").stdout)
    assert show["options"]["machine_type"] == "S"
    assert show["options"]["keep_alive"] == 300
    assert show["options"]["startup_timeout"] == 300
    assert show["runners"]["ready"] == 1
    human = platform.cli("apps", "show", "run-server").stdout
    assert "request_timeout" in human and "600" in human
    # Its limits, each settable per app, and shown as set.
    assert "1000 sync callers may wait (max_waiting)" in human
    assert "at most 10000 for this app (queue_results_per_app)" in human
    platform.cli("apps", "scale", "run-server", "--max-waiting", "7", "--queue-results", "50")
    human = " ".join(platform.cli("apps", "show", "run-server").stdout.split())
    assert "7 sync callers may wait (max_waiting)" in human
    assert "at most 50 for this app (queue_results_per_app)" in human
    platform.cli("apps", "scale", "run-server", "--max-waiting", "1000", "--queue-results", "10000")
    listed = json.loads(platform.cli("apps", "list", "--json").stdout)
    assert [a["name"] for a in listed] == ["run-server"]
    logs = platform.cli("logs", "run-server").stdout
    assert "Application startup complete" in logs


@pytest.fixture(scope="module")
def echo_app(platform: PlatformProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    deploy(platform, Path(__file__).parent / "apps" / "echo", "app.py::echo")
    return "/local/echo"


def test_request_passes_through_unchanged(platform: PlatformProcess, echo_app: str) -> None:
    with platform.http() as http:
        resp = http.post(
            f"{echo_app}/echo/a%2Fb/c?x=1&x=2&y=%20z",
            content=b"payload",
            headers={"x-custom": "yes", "content-type": "text/plain", "cookie": "a=1; b=2"},
        )
    assert resp.status_code == 200
    seen = resp.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/echo/a/b/c"  # the app prefix is stripped, the rest kept
    assert seen["raw_query"] == "x=1&x=2&y=%20z"
    assert seen["body"] == "payload"
    assert seen["headers"]["x-custom"] == "yes"
    assert seen["headers"]["content-type"] == "text/plain"
    assert seen["cookies"] == {"a": "1", "b": "2"}
    assert seen["headers"]["x-forwarded-prefix"] == echo_app
    assert resp.headers["x-middleware"] == "stamped"


def test_methods_statuses_cookies_redirects(platform: PlatformProcess, echo_app: str) -> None:
    with platform.http() as http:
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            assert http.request(method, f"{echo_app}/echo/m").json()["method"] == method
        for code in (400, 404, 418, 422, 500, 503):
            resp = http.get(f"{echo_app}/status/{code}")
            assert resp.status_code == code
            assert resp.json() == {"status": code}
        resp = http.get(f"{echo_app}/cookies")
        set_cookies = resp.headers.get_list("set-cookie")
        assert len(set_cookies) == 2
        assert any(c.startswith("session=abc123") and "HttpOnly" in c for c in set_cookies)
        resp = http.get(f"{echo_app}/redirect")  # httpx does not follow by default
        assert resp.status_code == 302
        assert resp.headers["location"] == "/target?x=1"
        resp = http.get(f"{echo_app}/no-such-route")
        assert resp.status_code == 404
        assert resp.json() == {"detail": "Not Found"}  # FastAPI's, not the gateway's


def test_streamed_response_arrives_incrementally(platform: PlatformProcess, echo_app: str) -> None:
    arrivals: list[tuple[float, str]] = []
    start = time.monotonic()
    with (
        platform.http() as http,
        http.stream("GET", f"{echo_app}/stream", params={"events": 4, "gap": 0.4}) as resp,
    ):
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line:
                arrivals.append((time.monotonic() - start, line))
    assert [line for _, line in arrivals] == [f"data: event {i}" for i in range(4)]
    # Streamed, not buffered: the first event came well before the last.
    assert arrivals[-1][0] - arrivals[0][0] >= 1.0


def test_50_mb_upload_and_download_are_byte_identical(
    platform: PlatformProcess, echo_app: str
) -> None:
    payload = os.urandom(50 * 1024 * 1024)
    with platform.http(timeout=120) as http:
        resp = http.post(f"{echo_app}/upload", content=payload)
        assert resp.status_code == 200
        assert resp.json() == {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}

        def chunks() -> Any:
            view = memoryview(payload)
            for i in range(0, len(payload), 1 << 20):
                yield bytes(view[i : i + (1 << 20)])

        resp = http.post(f"{echo_app}/upload", content=chunks())  # chunked upload
        assert resp.json()["sha256"] == hashlib.sha256(payload).hexdigest()

        digest = hashlib.sha256()
        with http.stream("GET", f"{echo_app}/download", params={"mib": 50}) as resp:
            assert resp.headers["content-length"] == str(50 * 1024 * 1024)
            for chunk in resp.iter_raw():
                digest.update(chunk)
    block = bytes(range(256)) * 4096
    assert digest.hexdigest() == hashlib.sha256(block * 50).hexdigest()


def test_two_runners_of_one_exposed_port_serve_at_once(
    platform: PlatformProcess, echo_app: str
) -> None:
    gate = platform.data_dir / "data" / "two-runners-gate"

    def call() -> dict[str, Any]:
        with platform.http() as http:
            resp = http.get(f"{echo_app}/whoami", params={"gate": gate.name})
            assert resp.status_code == 200
            out: dict[str, Any] = resp.json()
            return out

    def busy() -> int:
        return sum(r["in_flight"] for r in runners(platform, "echo"))

    with ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(call) for _ in range(2)]
        # Both held at once (one request per runner), however slowly the second starts.
        wait_for(lambda: busy() == 2, timeout=120, what="both requests to be running")
        gate.touch()
        results = [c.result(60) for c in calls]
    assert results[0]["runner"] != results[1]["runner"]
    ready = [r for r in runners(platform, "echo") if r["state"] in ("idle", "running")]
    assert len(ready) == 2
    assert all(r["isolated_network"] for r in ready)


def test_scale_from_zero_then_keep_alive_stops_idle_runner(
    platform: PlatformProcess, apps_dir: Path
) -> None:
    deploy(platform, apps_dir / "echo", "app.py::short_lived")
    assert live(platform, "short-lived") == []
    with platform.http() as http:
        first = http.get("/local/short-lived/whoami")
    last_request_done = time.time()
    assert first.status_code == 200
    # Through the API, not the CLI: a CLI start on a loaded machine can outlast keep_alive.
    with platform.http() as http:
        listed = http.get("/api/v1/apps/short-lived/runners").json()
    assert [r["id"] for r in listed if r["state"] in ("setup", "idle", "running")] == [
        first.json()["runner"]
    ]
    # keep_alive=2: the idle runner stops on its own, and says why.
    ended = wait_for(
        lambda: [r for r in runners(platform, "short-lived") if r["state"] == "terminated"],
        timeout=20,
        what="the idle runner to stop",
    )
    assert "keep_alive (2s)" in ended[0]["reason"]
    # Not before keep_alive has passed since the last request (the loop ticks every 0.5 s).
    assert 2.0 <= ended[0]["ended_at"] - last_request_done < 10
    assert live(platform, "short-lived") == []
    with platform.http() as http:  # and scales from zero again
        again = http.get("/local/short-lived/whoami")
    assert again.status_code == 200
    assert again.json()["runner"] != first.json()["runner"]


def test_server_crash_mid_request_gives_502_then_new_runner(
    platform: PlatformProcess, apps_dir: Path
) -> None:
    deploy(platform, apps_dir / "echo", "app.py::echo", "--app-name", "crashy")
    with platform.http() as http:
        before = http.get("/local/crashy/whoami").json()["runner"]
        resp = http.get("/local/crashy/crash")
        assert resp.status_code == 502
        body = resp.json()
        assert body["error_type"] == "runner_connection_error"
        assert before in body["detail"]
        after = http.get("/local/crashy/whoami")
        assert after.status_code == 200
        assert after.json()["runner"] != before
    failed = next(r for r in runners(platform, "crashy") if r["id"] == before)
    assert failed["state"] == "failed"


def test_request_timeout_gives_504(platform: PlatformProcess, apps_dir: Path) -> None:
    deploy(platform, apps_dir / "echo", "app.py::impatient")
    with platform.http() as http:
        # A cold start may take longer than request_timeout (1 s): first, a ready runner.
        wait_for(lambda: http.get("/local/impatient/whoami").status_code == 200, timeout=120,
                 what="a runner to be ready")  # fmt: skip
        resp = http.get("/local/impatient/whoami", params={"sleep": 3})
    assert resp.status_code == 504
    assert resp.json()["error_type"] == "request_timeout"
    assert resp.headers["x-fal-request-timeout-type"] == "running"
    assert "request_timeout (1s)" in resp.json()["detail"]


def test_server_that_never_listens_gives_503_after_startup_timeout(
    platform: PlatformProcess, apps_dir: Path
) -> None:
    deploy(platform, apps_dir / "silent", "app.py::never_listens")
    started = time.monotonic()
    with platform.http() as http:
        resp = http.get("/local/never-listens/")
    assert resp.status_code == 503
    assert time.monotonic() - started >= 2
    body = resp.json()
    assert body["error_type"] == "startup_failed"
    assert "startup_timeout (2s)" in body["detail"]
    assert "port 8000" in body["detail"]
    # It is stopped (SIGTERM, then a kill after the grace period), and says why.
    failed = wait_for(
        lambda: [r for r in runners(platform, "never-listens") if r["state"] == "failed"],
        timeout=20,
    )
    assert "startup_timeout" in failed[0]["reason"]
    logs = platform.cli("logs", "never-listens").stdout
    assert "starting up, but never listening" in logs


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("unknown_option.py", "unknown option 'keepalive'. Did you mean 'keep_alive'?"),
        ("bad_port.py", "exposed_port=70000"),
        ("negative_keep_alive.py", "keep_alive=-5"),
        ("min_over_max.py", "min_concurrency (4) is greater than max_concurrency (2)"),
    ],
)
def test_bad_options_are_rejected_with_their_names(
    platform: PlatformProcess, apps_dir: Path, file: str, message: str
) -> None:
    done = platform.cli("deploy", f"{file}::app", cwd=apps_dir / "bad", check=False)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_delete_stops_runners_and_unroutes(platform: PlatformProcess, apps_dir: Path) -> None:
    deploy(platform, apps_dir / "echo", "app.py::echo", "--app-name", "doomed")
    with platform.http() as http:
        assert http.get("/local/doomed/whoami").status_code == 200
        who = http.get("/local/doomed/whoami").json()
        pid = platform.host_pid(who["runner"], who["pid"])
        platform.cli("apps", "delete", "doomed")
        resp = http.get("/local/doomed/whoami")
    assert resp.status_code == 404
    assert resp.json()["error_type"] == "app_not_found"
    wait_for(lambda: not _alive(pid), timeout=15, what="the runner's server to exit")
    assert "doomed" not in platform.cli("apps", "list").stdout


def test_unknown_app_and_unreachable_platform_errors(platform: PlatformProcess) -> None:
    done = platform.cli("apps", "show", "nope", check=False)
    assert done.returncode == 1
    assert "no app named 'nope'" in done.stderr
    done = platform.cli("--url", "http://127.0.0.1:9", "apps", "list", check=False)
    assert done.returncode == 1
    assert "cannot reach a tidal platform at http://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_runner_killed_while_idle_is_replaced_without_an_error(
    platform: PlatformProcess, apps_dir: Path
) -> None:
    deploy(platform, apps_dir / "echo", "app.py::echo", "--app-name", "fragile")
    with platform.http() as http:
        first = http.get("/local/fragile/whoami").json()
        pid = platform.host_pid(first["runner"], first["pid"])
        os.kill(pid, signal.SIGKILL)  # the user's server, not the runtime
        wait_for(lambda: not _alive(pid), timeout=10, what="the server to die")
        # Nothing was sent to the dead server: the gateway routes around it.
        after = http.get("/local/fragile/whoami")
    assert after.status_code == 200
    assert after.json()["runner"] != first["runner"]
    wait_for(
        lambda: any(
            r["id"] == first["runner"] and r["state"] == "failed"
            for r in runners(platform, "fragile")
        ),
        timeout=15,
        what="the killed runner to be marked failed",
    )


def test_scale_and_stop_from_the_cli(platform: PlatformProcess, apps_dir: Path) -> None:
    deploy(platform, apps_dir / "echo", "app.py::echo", "--app-name", "tunable")
    done = platform.cli("apps", "scale", "tunable", "--min-concurrency", "1", "--keep-alive", "60")
    assert "min_concurrency=1" in done.stdout
    # min_concurrency takes effect at once, with no request and no redeploy.
    ready = wait_for(
        lambda: [r for r in runners(platform, "tunable") if r["state"] in ("idle", "running")],
        timeout=30,
        what="a warm runner",
    )
    assert "(live change)" in platform.cli("apps", "show", "tunable").stdout
    platform.cli("runners", "stop", ready[0]["id"])
    stopped = next(r for r in runners(platform, "tunable") if r["id"] == ready[0]["id"])
    assert stopped["state"] == "terminated"
    assert stopped["reason"] == "stopped by request"
    # The floor is kept: a new runner replaces the stopped one.
    wait_for(
        lambda: [r for r in runners(platform, "tunable") if r["state"] in ("idle", "running")],
        timeout=30,
        what="a replacement runner",
    )
    done = platform.cli("apps", "scale", "tunable", "--max-concurrency", "0", check=False)
    assert done.returncode == 1
    assert "max_concurrency=0" in done.stderr
    platform.cli("apps", "delete", "tunable")


def test_runners_stop_when_the_platform_is_killed(
    apps_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with start_platform(tmp_path_factory.mktemp("doomed-platform")) as doomed:
        deploy(doomed, apps_dir / "echo", "app.py::echo")
        with doomed.http() as http:
            who = http.get("/local/echo/whoami").json()
            server_pid = doomed.host_pid(who["runner"], who["pid"])
        runtime_pids = doomed.runner_pids()
        assert runtime_pids
        doomed.process.kill()  # no graceful shutdown: the runners notice on their own
        doomed.process.wait()
        for pid in [server_pid, *runtime_pids]:
            wait_for(lambda pid=pid: not _alive(pid), timeout=15, what=f"process {pid} to exit")


def test_a_servers_own_openapi_becomes_the_apps(platform: PlatformProcess, echo_app: str) -> None:
    with platform.http() as http:
        http.get(f"{echo_app}/whoami")

        def document() -> dict[str, Any] | None:
            resp = http.get("/api/v1/apps/echo/openapi.json")
            return resp.json() if resp.status_code == 200 else None

        doc = wait_for(document, timeout=20, what="the server's OpenAPI document")
    assert "/whoami" in doc["paths"]
    assert "GET /whoami" in platform.cli("apps", "show", "echo").stdout


def test_metadata_openapi_is_validated(platform: PlatformProcess, apps_dir: Path) -> None:
    done = platform.cli("deploy", "bad_openapi.py::app", cwd=apps_dir / "bad", check=False)
    assert done.returncode == 1
    assert "metadata['openapi'] is not a valid OpenAPI document: at info: Field required" in (
        done.stderr.replace("\n", " ")
    )


def test_setup_function_runs_before_the_first_request(
    platform: PlatformProcess, apps_dir: Path
) -> None:
    deploy(platform, apps_dir / "echo", "with_setup.py::prepared")
    with platform.http() as http:
        runner = http.get("/local/prepared/whoami").json()["runner"]
    assert (platform.data_dir / "data" / "prepared-by-setup").read_text() == runner
