"""`tidal files` over an app's /data and `tidal queue` (inspect, flush), as a user runs them,
against a real platform and runners."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidal.testing import PlatformProcess, start_platform, wait_for

pytestmark = pytest.mark.slow

APPS = Path(__file__).parent / "apps"
LIMIT = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    data_dir = tmp_path_factory.mktemp("platform")
    (data_dir / "tidal.toml").write_text(
        f"data_upload_limit_bytes = {LIMIT}\nhealth_check_interval_seconds = 0.5\n"
        "[host]\ncpus = 64\nmemory_mb = 131072\n"
    )
    with start_platform(data_dir) as running:
        yield running


def ls(platform: PlatformProcess, app: str, path: str = "") -> dict[str, Any]:
    out: dict[str, Any] = json.loads(platform.cli("files", "ls", app, path, "--json").stdout)
    return out


def test_files_round_trip_through_the_cli_and_a_runner(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    platform.cli("deploy", "app.py::data_files", cwd=APPS / "data_files")
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(LIMIT - 1))  # streamed, just under the limit
    done = platform.cli("files", "upload", "data-files", str(weights), "models/v1/")
    assert "/data/models/v1/weights.bin" in done.stdout
    notes = tmp_path / "notes.txt"
    notes.write_text("hello from the CLI\n")
    platform.cli("files", "upload", "data-files", str(notes), "notes.txt")

    listed = ls(platform, "data-files")
    names = {(e["name"], e["type"]) for e in listed["entries"]}
    assert {("models", "dir"), ("notes.txt", "file")} <= names
    inner = ls(platform, "data-files", "models/v1")["entries"]
    assert [(e["name"], e["size"]) for e in inner] == [("weights.bin", LIMIT - 1)]
    human = platform.cli("files", "ls", "data-files", "models/v1").stdout
    assert "weights.bin" in human and "2.0 MiB" in human

    with platform.http() as http:
        # The runner sees the uploads under /data ...
        assert http.get("/local/data-files/read", params={"path": "notes.txt"}).text == (
            "hello from the CLI\n"
        )
        # ... and what it writes there comes back through the CLI.
        made = http.post("/local/data-files/write", params={"path": "out/result.txt"},
                         content=b"made by the runner")  # fmt: skip
        assert made.status_code == 200
        assert http.post("/local/data-files/link",
                         params={"path": "escape", "to": "/etc"}).status_code == 200  # fmt: skip
    got = tmp_path / "got"
    got.mkdir()
    platform.cli("files", "download", "data-files", "out/result.txt", str(got))
    assert (got / "result.txt").read_text() == "made by the runner"
    platform.cli("files", "download", "data-files", "models/v1/weights.bin", str(got / "w.bin"))
    digest = hashlib.sha256((got / "w.bin").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(weights.read_bytes()).hexdigest()
    stdout = platform.cli("files", "download", "data-files", "notes.txt", "-").stdout
    assert stdout == "hello from the CLI\n"

    # A link the runner made is shown as a link, never followed.
    entries = {e["name"]: e["type"] for e in ls(platform, "data-files")["entries"]}
    assert entries["escape"] == "link"
    refused = platform.cli("files", "ls", "data-files", "escape/passwd", check=False)
    assert refused.returncode == 1 and "symbolic link" in refused.stderr
    refused = platform.cli("files", "download", "data-files", "escape", str(got), check=False)
    assert refused.returncode == 1 and "symbolic link" in refused.stderr
    platform.cli("files", "rm", "data-files", "escape")  # the link, not /etc
    assert Path("/etc/passwd").exists()

    # The file store's path rules.
    for bad in ("../tidal.db", "models/../../x", ".hidden", "a//b"):
        done = platform.cli("files", "upload", "data-files", str(notes), bad, check=False)
        assert done.returncode == 1, bad
        assert "is not a name /data files may have" in done.stderr, (bad, done.stderr)
    assert not (platform.data_dir / "tidal.db.notes").exists()

    # Over the limit: refused, and no partial file is left behind.
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (LIMIT + 1))
    done = platform.cli("files", "upload", "data-files", str(big), "big.bin", check=False)
    assert done.returncode == 1 and "limit" in done.stderr and "HTTP 413" in done.stderr
    assert "big.bin" not in {e["name"] for e in ls(platform, "data-files")["entries"]}

    # Removing: a file; a folder only with --recursive.
    done = platform.cli("files", "rm", "data-files", "models", check=False)
    assert done.returncode == 1 and "--recursive" in done.stderr
    platform.cli("files", "rm", "data-files", "models", "--recursive")
    platform.cli("files", "rm", "data-files", "notes.txt")
    names = {e["name"] for e in ls(platform, "data-files")["entries"]}
    assert "models" not in names and "notes.txt" not in names
    missing = platform.cli("files", "download", "data-files", "notes.txt", str(got), check=False)
    assert missing.returncode == 1 and "no such file" in missing.stderr
    unknown = platform.cli("files", "ls", "no-such-app", check=False)
    assert unknown.returncode == 1 and "no app named 'no-such-app'" in unknown.stderr


def test_files_commands_explain_an_unreachable_platform_alike(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    """Upload, download (streamed) and rm fail the same way as every other command:
    one paragraph naming the URL and how to get a platform, no traceback."""
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    for args in (
        ("upload", "some-app", str(notes)),
        ("download", "some-app", "notes.txt", str(tmp_path / "got.txt")),
        ("download", "some-app", "notes.txt", "-"),
        ("rm", "some-app", "notes.txt"),
    ):
        done = platform.cli("--url", "http://127.0.0.1:9", "files", *args, check=False)
        assert done.returncode == 1, args
        assert "cannot reach a tidal platform at http://127.0.0.1:9" in done.stderr, args
        assert "Start one with `tidal server`" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr, args
    assert not (tmp_path / "got.txt").exists()


def submit(http: Any, path: str, body: Any) -> str:
    resp = http.post(f"/queue/local/single/{path}", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["request_id"])


def test_queue_listed_and_flushed(platform: PlatformProcess) -> None:
    platform.cli("deploy", "scaling.py::single", cwd=APPS / "echo")  # one runner, one slot
    with platform.http() as http:
        assert http.post("/local/single/work").status_code == 200  # a warm runner
        # It runs until the test opens its gate: the CLI calls below may take any time.
        running = submit(http, "work?gate=first-may-finish", {"n": 0})
        wait_for(
            lambda: (
                http.get(f"/queue/local/single/requests/{running}/status").json()["status"]
                == "IN_PROGRESS"
            ),
            timeout=90,
            what="the first request to run",
        )
        waiting = [submit(http, "work", {"n": i}) for i in range(1, 6)]
        view = wait_for(
            lambda: (v := json.loads(platform.cli("queue", "single", "--json", "--first", "3")
                                     .stdout))["queued"] == 5 and v,
            timeout=60, what="five queued requests",
        )  # fmt: skip
        assert view["running"] == 1
        assert view["oldest_wait_seconds"] > 0 and view["longest_running_seconds"] > 0
        assert [w["request_id"] for w in view["waiting"]] == waiting[:3]
        human = platform.cli("queue", "single").stdout
        assert "5 queued, 1 running" in human and waiting[0] in human

        flushed = platform.cli("queue", "flush", "single").stdout
        assert "5 waiting request(s) cancelled" in flushed
        for request_id in waiting:
            status = http.get(f"/queue/local/single/requests/{request_id}/status").json()
            assert status["status"] == "COMPLETED"
            assert status["error_type"] == "request_cancelled"
            assert "flushed" in status["error"]
        # The running request was left to finish.
        (platform.data_dir / "data" / "first-may-finish").touch()
        done = wait_for(
            lambda: (
                (s := http.get(f"/queue/local/single/requests/{running}/status").json())["status"]
                == "COMPLETED"
                and s
            ),
            timeout=90,
            what="the running request to finish",
        )
        assert done.get("error") is None
    view = json.loads(platform.cli("queue", "single", "--json").stdout)
    assert (view["queued"], view["running"], view["waiting"]) == (0, 0, [])
    runs = (platform.data_dir / "data" / "work-runs.txt").read_text().split()
    assert not set(waiting) & set(runs)  # flushed before any ran
