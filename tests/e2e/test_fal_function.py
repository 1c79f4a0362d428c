"""A plain `@fal.function`, called from the user's own script (fal's original use):
the script, written as fal's documentation writes one, runs with
`python -m tidal.compat script.py`; the first call deploys the function through
the `fal` shim, each call runs on a runner through the queue, the runner's output
is printed by the script as it happens, exceptions come back with the runner's
traceback, and a second run of the script reuses the deployed app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tidal.testing import PlatformProcess

pytestmark = pytest.mark.slow

SCRIPT_DIR = Path(__file__).parent / "apps" / "fal_function"


def run_script(platform: PlatformProcess, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tidal.compat", "script.py", *args],
        cwd=SCRIPT_DIR, env={**os.environ, "TIDAL_URL": platform.url},
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def revisions(platform: PlatformProcess, app: str) -> int:
    listed = json.loads(platform.cli("apps", "list", "--json").stdout)
    return next(a["revision"] for a in listed if a["name"] == app)


def test_a_call_runs_on_a_runner_and_returns_its_value(platform: PlatformProcess) -> None:
    first = run_script(platform, "add")
    assert "Deployed local/add revision 1" in first.stderr
    lines = first.stdout.splitlines()
    assert "adding 2 and 3 on a runner" in lines  # printed on the runner, shown here
    result = next(li for li in lines if li.startswith("result:"))
    assert result == f"result: {{'sum': 5, 'python': {tuple(sys.version_info[:2])}}}"
    # A lambda made in the script (cloudpickle) ran on the runner.
    assert any(li.startswith("closure: {'sum': [2, 1]") for li in lines)
    # The same code again: the deployed app is reused, not deployed anew.
    again = run_script(platform, "add")
    assert "Deployed" not in again.stderr and "adding 2 and 3 on a runner" in again.stdout
    assert revisions(platform, "add") == 1
    # tidal's runtime serves a plain function: it said when it listened, no timer found it.
    listed = json.loads(platform.cli("runners", "list", "add", "--json").stdout)
    assert listed and {r["ready_from"] for r in listed} == {"listening signal"}, listed


def test_an_exception_is_raised_in_the_script_with_the_runners_traceback(
    platform: PlatformProcess,
) -> None:
    done = run_script(platform, "fail")
    # Caught by its own class, defined in the script (its __main__).
    assert "caught: NotAllowed -4 is negative" in done.stdout
    assert "The function failed on its runner" in done.stdout
    assert 'in check\n    raise NotAllowed(f"{value} is negative")' in done.stdout
    assert "function_server" not in done.stdout  # tidal's own frames are left out
    assert "checking -4" in done.stdout


def test_submit_queues_a_long_call_and_result_waits(platform: PlatformProcess) -> None:
    done = run_script(platform, "queue")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("queued: ") and "queued result: 7" in lines
    request_id = lines[0].removeprefix("queued: ")
    with platform.http() as http:
        status = http.get(f"/queue/local/check/requests/{request_id}/status?logs=1").json()
    assert status["status"] == "COMPLETED"
    assert [entry["message"] for entry in status["logs"]] == ["checking 7"]
