"""Deploy to first response for an app with a non-trivial requirement: cold (the
environment is built) against warm (a second app with the same requirements reuses
it). Run: .venv/bin/python bench/environment_deploy.py [--requirement numpy==2.1.3]"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from tidal.testing import PlatformProcess, start_platform

APP = """
import subprocess
import tidal

@tidal.function(exposed_port=8000, requirements=[{req!r}], keep_alive=30)
def {name}() -> None:
    subprocess.run(["uvicorn", "server:app", "--host", "127.0.0.1", "--port", "8000"], check=True)
"""
SERVER = """
import importlib
from fastapi import FastAPI

app = FastAPI()

@app.get("/")
def root() -> dict[str, str]:
    module = importlib.import_module({module!r})
    return {{"version": module.__version__}}
"""


def deploy_and_call(platform: PlatformProcess, folder: Path, name: str) -> tuple[float, str]:
    started = time.perf_counter()
    platform.cli("deploy", f"app.py::{name}", cwd=folder, timeout=900)
    resp = httpx.get(f"{platform.url}/local/{name.replace('_', '-')}/", timeout=300)
    resp.raise_for_status()
    return time.perf_counter() - started, resp.json()["version"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requirement", default="numpy==2.1.3")
    args = parser.parse_args()
    module = args.requirement.split("==")[0].split(">")[0].replace("-", "_")
    console = Console()
    with tempfile.TemporaryDirectory(prefix="tidal-envbench-") as tmp:
        root = Path(tmp)
        folder = root / "app"
        folder.mkdir()
        (folder / "server.py").write_text(SERVER.format(module=module))
        (folder / "app.py").write_text(
            APP.format(req=args.requirement, name="cold_app")
            + APP.format(req=args.requirement, name="warm_app").split("import tidal", 1)[1]
        )
        (root / "data").mkdir()
        with start_platform(root / "data") as platform:
            cold, version = deploy_and_call(platform, folder, "cold_app")
            warm, _ = deploy_and_call(platform, folder, "warm_app")
    table = Table(title=f"deploy → first response, requirements=[{args.requirement!r}]")
    table.add_column("case")
    table.add_column("seconds", justify="right")
    table.add_row("cold: environment built at deploy", f"{cold:.2f}")
    table.add_row("warm: same requirements, cached environment", f"{warm:.2f}")
    table.add_row("ratio cold / warm", f"{cold / warm:.1f}x")
    console.print(table)
    console.print(f"{module} {version} answered from the app's own environment")


if __name__ == "__main__":
    main()
