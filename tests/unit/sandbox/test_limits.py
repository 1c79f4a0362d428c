from __future__ import annotations

from tidal.sandbox.environment import runner_environment
from tidal.sandbox.limits import Limits, out_of_memory_reason


def test_out_of_memory_reason_names_the_machine_type_and_its_memory() -> None:
    assert out_of_memory_reason("S", 1024) == "out of memory: machine type S allows 1 GB"
    assert out_of_memory_reason("XS", 512) == "out of memory: machine type XS allows 512 MB"
    assert out_of_memory_reason("odd", 1536) == "out of memory: machine type odd allows 1.5 GB"


def test_cpu_quota_and_the_startup_boost() -> None:
    xs = Limits(cpus=0.5, memory_mb=512, pids=64)
    assert xs.cpu_quota_us == 50_000
    assert xs.starting(2.0).cpu_quota_us == 200_000
    assert xs.starting(0).cpu_quota_us == 50_000  # no boost
    assert Limits(cpus=8, memory_mb=1, pids=1).starting(2.0).cpus == 8
    assert Limits(cpus=0.001, memory_mb=1, pids=1).cpu_quota_us == 1000  # the kernel's least


def test_runner_environment_is_an_allowlist() -> None:
    platform = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "TIDAL_DATABASE_URL": "postgresql://x",
                "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/root"}  # fmt: skip
    env = runner_environment(platform, {"TIDAL_RUNNER_ID": "r-1", "MY_SECRET": "v"}, home="/tmp")
    assert env == {
        "PATH": "/usr/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "TIDAL_RUNNER_ID": "r-1",
        "MY_SECRET": "v", "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
