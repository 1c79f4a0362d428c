"""`fal.distributed` on a CPU host with fake GPUs (tidal.toml's [host] inventory):
an app written as fal's distributed docs write one, asking for fal's `GPU-A100`,
is refused with the tidal.toml mapping to use; with the mapping, its runner gets
two of the host's GPUs and runs two ranks joined by gloo (NCCL on real GPUs).
Needs torch (CPU wheel); skipped where it is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tidal.testing import start_platform

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch", reason="fal.distributed needs torch (pip install torch)")

APP = Path(__file__).parent / "apps" / "fal_distributed"
HOST = '[host]\ncpus = 64\nmemory_mb = 131072\ngpus = 4\ngpu_model = "T4"\n'
MAPPING = '[machine_types.GPU-A100]\ngpus = 1\ngpu_model = "T4"\ncpus = 2\nmemory_mb = 4096\n'


def test_a_fal_gpu_app_without_the_gpu_points_to_the_mapping(tmp_path: Path) -> None:
    (tmp_path / "tidal.toml").write_text(HOST)
    with start_platform(tmp_path) as platform:
        refused = platform.cli("deploy", "app.py::MultiGPU", cwd=APP, check=False)
    assert refused.returncode == 1
    said = refused.stderr
    assert "unknown machine type 'GPU-A100'" in said
    assert "[machine_types.GPU-A100]" in said and 'gpu_model = "T4"' in said


def test_two_ranks_on_the_runners_gpus(tmp_path: Path) -> None:
    (tmp_path / "tidal.toml").write_text(HOST + MAPPING)
    with start_platform(tmp_path) as platform:
        platform.cli("deploy", "app.py::MultiGPU", cwd=APP)
        with platform.http(timeout=180) as http:
            done = http.post("/local/multi-gpu", json={"value": 3})
            assert done.status_code == 200, done.text
            got = done.json()
            assert "sum" in got, got
            # rank 0 gives 3*1*10, rank 1 gives 3*2*10: all_reduce sums them.
            assert got["sum"] == 90.0 and got["world_size"] == 2 and got["device"] == "cpu"
            runners = json.loads(platform.cli("runners", "list", "multi-gpu", "--json").stdout)
            assert sorted(got["gpus"]) == sorted(runners[0]["gpus"])  # the runner's 2 GPUs
            failed = http.post("/local/multi-gpu", json={"value": -1}).json()
            assert failed == {"error": "value must not be negative"}  # fal's answer
            with http.stream("POST", "/local/multi-gpu/stream", json={"value": 1}) as resp:
                events = [json.loads(line[len("data: "):]) for line in resp.iter_lines()
                          if line.startswith("data: ")]  # fmt: skip
            assert events[:3] == [{"step": i, "rank": 0} for i in range(3)]
            assert events[-1]["sum"] == 30.0
        logs = platform.cli("logs", "multi-gpu").stdout
        assert "[rank 0] set up on GPU" in logs and "[rank 1] set up on GPU" in logs
