"""How long a CLI command takes from exec to exit, against `python -c pass` in the same run.

Each command runs N times; the table shows the best wall time and the best CPU time
(user + system of the child, less sensitive to a loaded machine) and each as a ratio
to the interpreter's own start. `apps list` talks to a platform that refuses the
connection (port 9), so it measures the CLI, not a server.

    .venv/bin/python bench/cli_start.py [--trials N]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

COMMANDS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "tidal version": ["-m", "tidal", "version"],
    "tidal --help": ["-m", "tidal", "--help"],
    "tidal apps --help": ["-m", "tidal", "apps", "--help"],
    "tidal apps list": ["-m", "tidal", "apps", "list"],
    "import tidal.cli.main": ["-c", "import tidal.cli.main"],
}


def once(args: list[str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "TIDAL_URL": "http://127.0.0.1:9"})  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    trials = parser.parse_args().trials
    best: dict[str, tuple[float, float]] = {}
    for _ in range(trials):  # interleaved, so a burst of load hits every command alike
        for name, args in COMMANDS.items():
            wall, cpu = once(args)
            old = best.get(name, (wall, cpu))
            best[name] = (min(old[0], wall), min(old[1], cpu))
    base_wall, base_cpu = best["python -c pass"]
    print(f"best of {trials}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'command':<24}{'wall ms':>9}{'x pass':>8}{'cpu ms':>9}{'x pass':>8}")
    for name, (wall, cpu) in best.items():
        print(f"{name:<24}{wall * 1000:>9.0f}{wall / base_wall:>8.1f}"
              f"{cpu * 1000:>9.0f}{cpu / base_cpu:>8.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
