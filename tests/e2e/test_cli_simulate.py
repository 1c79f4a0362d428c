"""`tidal scale simulate`: replay a request trace against the scaling policy from the CLI.

Most tests drive the command in-process with typer's CliRunner, mounted as
`tidal.cli.main` mounts it (`scale`); one runs the real `tidal` entry point once
main.py registers the command. No platform is started: the simulator is offline.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from tidal.cli.simulate import simulate_app

# One request at 0 (1 s), one at 30 (1 s): with keep_alive 0 each pays a cold start;
# with 60 the second finds the runner still up.
SPACED = "arrival,duration\n0,1\n30,1\n"


def _cli() -> typer.Typer:
    root = typer.Typer(pretty_exceptions_enable=False)
    root.add_typer(simulate_app, name="scale")

    @root.callback()
    def _root() -> None:
        """tidal (for the tests)."""

    return root


def _run(*args: str) -> Result:
    return CliRunner().invoke(_cli(), ["scale", "simulate", *args], env={"COLUMNS": "200"})


def _flat(text: str) -> str:
    """The text without rich's boxes and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─┃━]", " ", text).split())


@pytest.fixture
def spaced(tmp_path: Path) -> Path:
    path = tmp_path / "requests.csv"
    path.write_text(SPACED)
    return path


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_prints_a_table(spaced: Path) -> None:
    result = _run("--trace", str(spaced), "--keep-alive", "0")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "2 requests arriving from 0.00s to 30.00s" in out
    assert "keep_alive=0 min_concurrency=0 max_concurrency=10" in _flat(out)
    headers = next(line.split() for line in out.splitlines() if "cold-start" in line)
    assert headers == ["cold", "cold-start", "wait", "wait", "wait", "peak"]
    headers = next(line.split() for line in out.splitlines() if "runner-s" in line)
    assert headers == ["runner-s", "starts", "waits", "p50", "p99", "max", "runners"]
    assert "timed" not in out  # no request_timeout given
    row = next(line for line in out.splitlines() if "12.0" in line)
    # runner-seconds, cold starts, cold-start waits, p50, p99, max, peak runners
    assert _flat(row).split() == ["12.0", "2", "2", "5.00", "5.00", "5.00", "1"]


def test_json_results(spaced: Path) -> None:
    doc = _json(_run("--trace", str(spaced), "--keep-alive", "60", "--json"))
    assert doc["trace"] == {
        "path": str(spaced),
        "requests": 2,
        "first_arrival": 0.0,
        "last_arrival": 30.0,
    }
    assert doc["tick"] == 0.5
    assert doc["swept"] == []
    [result] = doc["results"]
    assert result["options"] == {
        "keep_alive": 60,
        "min_concurrency": 0,
        "max_concurrency": 10,
        "concurrency_buffer": 0,
        "concurrency_buffer_perc": 0,
        "scaling_delay": 0,
        "request_timeout": None,
        "max_multiplexing": 1,
        "cold_start": 5.0,
    }
    assert result["runner_seconds"] == 91.0  # up from 0 until 60 s after the 31 s end
    assert (result["cold_starts"], result["cold_start_waits"]) == (1, 1)
    assert (result["wait_p50"], result["wait_max"]) == (0.0, 5.0)
    assert (result["served"], result["timed_out"], result["rejected"]) == (2, 0, 0)


def test_sweep_prints_one_row_per_value(spaced: Path) -> None:
    result = _run("--trace", str(spaced), "--sweep", "keep_alive=0,60,300")
    assert result.exit_code == 0, result.output
    rows = [_flat(line).split() for line in result.stdout.splitlines()]
    rows = [r for r in rows if r and r[0] in ("0", "60", "300")]
    assert [r[:3] for r in rows] == [["0", "12.0", "2"], ["60", "91.0", "1"], ["300", "331.0", "1"]]
    assert "keep_alive=" not in result.stdout  # swept: a column, not in the title
    doc = _json(_run("--trace", str(spaced), "--sweep", "keep-alive=0,60,300", "--json"))
    assert doc["swept"] == ["keep_alive"]
    assert [r["options"]["keep_alive"] for r in doc["results"]] == [0, 60, 300]
    assert [r["cold_starts"] for r in doc["results"]] == [2, 1, 1]


def test_sweeps_make_a_grid(spaced: Path) -> None:
    doc = _json(_run("--trace", str(spaced), "--sweep", "keep_alive=0,60",
                     "--sweep", "cold_start=1,10", "--json"))  # fmt: skip
    combos = [(r["options"]["keep_alive"], r["options"]["cold_start"]) for r in doc["results"]]
    assert combos == [(0, 1.0), (0, 10.0), (60, 1.0), (60, 10.0)]
    assert [r["wait_max"] for r in doc["results"]] == [1.0, 10.0, 1.0, 10.0]


def test_timeouts_column_and_headerless_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("0,100\n")  # no header: arrival,duration
    result = _run("--trace", str(trace), "--request-timeout", "50")
    assert result.exit_code == 0, result.output
    assert "timed" in result.stdout
    assert "request_timeout=50" in _flat(result.stdout)
    doc = _json(_run("--trace", str(trace), "--request-timeout", "50", "--json"))
    assert doc["results"][0]["timed_out"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep-alive", "-1"], "invalid option keep_alive=-1: Input should be greater than or equal to 0"),
        (["--min-concurrency", "5", "--max-concurrency", "2"],
         "min_concurrency (5) is greater than max_concurrency (2)"),
        (["--max-multiplexing", "0"], "invalid option max_multiplexing=0"),
        (["--sweep", "max_concurrency=1,2", "--min-concurrency", "2"],
         "with max_concurrency=1: invalid options: min_concurrency (2) is greater than max_concurrency (1)"),
        (["--sweep", "keep_alive=ten"], "invalid option keep_alive='ten': Input should be a valid integer"),
        (["--sweep", "keepalive=1"], "'keepalive' cannot be swept. Did you mean 'keep_alive'? Choose one of keep_alive,"),
        (["--sweep", "keep_alive"], "should be NAME=V1,V2,... e.g. keep_alive=0,60,300"),
        (["--sweep", "keep_alive=1", "--sweep", "keep_alive=2"], "keep_alive is swept twice"),
        (["--tick", "0"], "0.0 is not a number of seconds > 0"),
        (["--cold-start", "-1"], "--cold-start"),
    ],
)  # fmt: skip
def test_invalid_options_are_named(spaced: Path, args: list[str], message: str) -> None:
    result = _run("--trace", str(spaced), *args)
    assert result.exit_code == 2, result.output
    assert message in _flat(result.output)


def test_bad_trace_names_the_line(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("arrival,duration\n0,1\n2,soon\n")
    result = _run("--trace", str(trace))
    assert result.exit_code == 2
    assert "line 3: duration 'soon' is not a number" in _flat(result.output)
    result = _run("--trace", str(tmp_path / "missing.csv"))
    assert result.exit_code == 2
    assert "missing.csv" in _flat(result.output)


def _wired() -> bool:
    from tidal.cli import main

    lazy = getattr(main, "RootGroup", None)  # sub-commands imported on first use
    return "scale" in getattr(lazy, "lazy", {}) or any(
        group.name == "scale" for group in main.app.registered_groups
    )


@pytest.mark.skipif(not _wired(), reason="`scale` is not registered in tidal.cli.main yet")
def test_the_tidal_command(spaced: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tidal", "scale", "simulate", "--trace", str(spaced),
         "--sweep", "keep_alive=0,60", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert [r["runner_seconds"] for r in doc["results"]] == [12.0, 91.0]
    bad = subprocess.run(
        [sys.executable, "-m", "tidal", "scale", "simulate", "--trace", str(spaced),
         "--keep-alive", "-1"],
        capture_output=True, text=True, timeout=60, env=None,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "invalid option keep_alive=-1" in _flat(bad.stderr)
