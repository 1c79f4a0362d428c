"""The docker backend's pure parts: which containers are orphans, env and mounts."""

from __future__ import annotations

from pathlib import Path

from tidal.backends.base import RunnerLaunch
from tidal.backends.docker import (
    BUNDLE_MOUNT,
    DATA_MOUNT,
    OWNER_LABEL,
    RUNNER_LABEL,
    bind_mounts,
    container_env,
    engine_error,
    engine_name,
    orphans,
    owner_id,
    runner_labels,
)
from tidal.spec import AppSpec


def test_orphans_are_only_this_platforms_untracked_containers() -> None:
    listing = [
        ("a", {OWNER_LABEL: "me", RUNNER_LABEL: "r-1"}),  # tracked
        ("b", {OWNER_LABEL: "me", RUNNER_LABEL: "r-2"}),  # left by a crash
        ("c", {OWNER_LABEL: "other", RUNNER_LABEL: "r-3"}),  # another platform's
        ("d", {}),  # the user's own container
    ]
    assert orphans(listing, "me", tracked={"r-1"}) == ["b"]
    assert orphans(listing, "me", tracked=()) == ["a", "b"]


def test_owner_id_is_per_data_dir(tmp_path: Path) -> None:
    assert owner_id(tmp_path) == owner_id(tmp_path / ".")
    assert owner_id(tmp_path) != owner_id(tmp_path / "other")


def _launch(tmp_path: Path, env: dict[str, str]) -> RunnerLaunch:
    return RunnerLaunch(
        runner_id="r-1", spec=AppSpec(name="app", entry="a.py::f"), revision=3,
        bundle_dir=tmp_path / "bundle", log_path=tmp_path / "r-1.log", env=env,
        isolate_network=False, data_dir=tmp_path / "data",
    )  # fmt: skip


def test_labels_never_carry_secrets(tmp_path: Path) -> None:
    labels = runner_labels("me", _launch(tmp_path, {"API_TOKEN": "secret"}))
    assert labels == {OWNER_LABEL: "me", RUNNER_LABEL: "r-1", "tidal.app": "app",
                      "tidal.revision": "3"}  # fmt: skip


def test_container_env_drops_host_paths_and_renumbers_gpus() -> None:
    env = container_env(
        {"PATH": "/venv/bin", "VIRTUAL_ENV": "/venv", "PYTHONPATH": "/rt",
         "CUDA_VISIBLE_DEVICES": "2,3", "SECRET": "s"},
        gpu_count=2,
    )  # fmt: skip
    assert "PATH" not in env and "VIRTUAL_ENV" not in env and "PYTHONPATH" not in env
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["SECRET"] == "s" and env["TIDAL_DATA_DIR"] == DATA_MOUNT
    assert container_env({}, 0)["CUDA_VISIBLE_DEVICES"] == ""


def test_bind_mounts_keep_store_and_request_log_paths(tmp_path: Path) -> None:
    env = {"TIDAL_FILES_DIR": "/store", "TIDAL_REQUEST_LOG": "/logs/r-1.requests.jsonl"}
    launch = _launch(tmp_path, env)
    mounts = bind_mounts(launch, {**env, "TIDAL_FILES_DIR": env["TIDAL_FILES_DIR"]})
    assert mounts[str(tmp_path / "bundle")] == {"bind": BUNDLE_MOUNT, "mode": "ro"}
    assert mounts[str(tmp_path / "data")] == {"bind": DATA_MOUNT, "mode": "rw"}
    assert mounts["/logs/r-1.requests.jsonl"]["bind"] == "/logs/r-1.requests.jsonl"
    assert mounts["/store"] == {"bind": "/store", "mode": "rw"}


def test_engine_name_tells_docker_from_podman() -> None:
    docker = {"Version": "20.10.24", "Components": [{"Name": "Engine", "Version": "20.10.24"}]}
    assert engine_name(docker) == "Docker Engine 20.10.24"
    podman = {"Version": "4.3.1", "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]}
    assert engine_name(podman) == "Podman Engine 4.3.1"
    assert engine_name({}) == "Docker Engine ?"


def test_engine_errors_name_the_fix() -> None:
    podman = (
        '500 Server Error: Internal Server Error ("container create: container-init binary '
        'not found on the host: stat /usr/libexec/podman/catatonit: no such file or directory")'
    )
    assert "install the `catatonit` package" in engine_error(podman)
    nvidia = '500 Server Error ("could not select device driver "" with capabilities: [[gpu]]")'
    assert "NVIDIA Container Toolkit" in engine_error(nvidia)
    assert engine_error("no space left on device") == "no space left on device"


def test_containers_get_the_machine_types_limits_and_no_privilege(tmp_path: Path) -> None:
    from dataclasses import replace

    from tidal.backends.docker import container_limits

    limits = container_limits(replace(_launch(tmp_path, {}), cpus=0.5, memory_mb=512))
    assert limits["nano_cpus"] == 500_000_000
    assert limits["mem_limit"] == limits["memswap_limit"] == "512m"
    assert limits["privileged"] is False
    assert limits["security_opt"] == ["no-new-privileges"]
    assert 0 < limits["pids_limit"] <= 4096
    assert "cap_add" not in limits and "devices" not in limits
