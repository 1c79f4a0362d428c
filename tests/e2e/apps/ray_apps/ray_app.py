"""Apps for the ray backend's tests: each says which runner, node folder and GPUs served it."""

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel

import tidal


class Work(BaseModel):
    sleep: float = 0.0
    # Hold until this many requests have arrived (each on its own runner, one slot each),
    # counted in the folder every node's runners share (the test's marker folder).
    barrier: int = 0


class Where(tidal.App, keep_alive=30, max_concurrency=2):
    """Runs anywhere a node offers XS."""

    machine_type = "XS"

    def teardown(self) -> None:
        marker = os.environ.get("TIDAL_TEARDOWN_MARKER")
        if marker:
            Path(marker, os.environ["TIDAL_RUNNER_ID"]).touch()

    @tidal.endpoint("/work")
    async def work(self, input: Work) -> dict[str, str]:
        if input.barrier:
            arrivals = Path(os.environ["TIDAL_TEARDOWN_MARKER"], "arrivals")
            arrivals.mkdir(exist_ok=True)
            (arrivals / os.environ["TIDAL_RUNNER_ID"]).touch()
            while len(list(arrivals.iterdir())) < input.barrier:
                await asyncio.sleep(0.05)
        await asyncio.sleep(input.sleep)
        return {
            "runner": os.environ["TIDAL_RUNNER_ID"],
            # The bundle is unpacked under the node's own folder (…/<node id>/bundles/…).
            "cwd": os.getcwd(),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "machine_type": os.environ.get("TIDAL_MACHINE_TYPE", ""),
        }


class Gpu(Where, keep_alive=30, min_concurrency=2, max_concurrency=2):
    """Only the node started with machine:GPU-T4 offers it."""

    machine_type = "GPU-T4"


class Burst(Where, keep_alive=2, max_concurrency=4):
    machine_type = "XS"


class Spare(Where, keep_alive=60, min_concurrency=2, max_concurrency=2):
    """Prefers the spare node's type; falls back to XS when that node is gone."""

    machine_type = ["SPARE", "XS"]
