"""fal's machine type names on a host without those GPUs: the deploy error says how to
map the name in tidal.toml, and the mapping makes the name usable."""

from __future__ import annotations

from tidal.machines import load_machines
from tidal.scaling.placement import Inventory


def inventory(settings: dict[str, object]) -> Inventory:
    host, catalog = load_machines(settings)
    return Inventory(host, catalog)


def test_a_fal_gpu_name_points_to_the_mapping_and_the_mapping_works() -> None:
    fake = {"host": {"cpus": 8, "memory_mb": 16384, "gpus": 2, "gpu_model": "T4"}}
    problem = inventory(fake).check(["GPU-A100"], None)
    assert problem is not None
    assert "unknown machine type 'GPU-A100'" in problem and "GPU-T4" in problem
    assert "this host's GPUs are T4" in problem
    assert '[machine_types.GPU-A100] table with gpus = 1 and gpu_model = "T4"' in problem
    mapped = {**fake, "machine_types": {"GPU-A100": {"gpus": 1, "gpu_model": "T4", "cpus": 2,
                                                      "memory_mb": 4096}}}  # fmt: skip
    assert inventory(mapped).check(["GPU-A100"], None) is None
    assert inventory(mapped).check(["GPU-A100"], 2) is None  # num_gpus=2 of the host's 2


def test_without_gpus_the_hint_says_how_to_run_on_cpu() -> None:
    problem = inventory({"host": {"cpus": 4, "memory_mb": 8192, "gpus": 0}}).check(
        ["GPU-H100"], None
    )
    assert problem is not None and "this host has no GPUs" in problem
    assert "[machine_types.GPU-H100] table with cpus and memory_mb and no gpus" in problem
    cpu_only = {"host": {"cpus": 4, "memory_mb": 8192, "gpus": 0},
                "machine_types": {"GPU-H100": {"cpus": 1, "memory_mb": 1024}}}  # fmt: skip
    assert inventory(cpu_only).check(["GPU-H100"], None) is None
