"""What a backend is told to start: the runner's launch, built from its app's
record, the capacity it was given, its environment and its owner's secrets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tidal.backends.base import Backend, RunnerLaunch
from tidal.config import PlatformConfig
from tidal.domain.app import AppRecord
from tidal.domain.runner import Runner
from tidal.environments import Environments, runner_setup
from tidal.scaling.placement import Allocation, Inventory
from tidal.storage.data import data_root
from tidal.templates.policy import templates_asked


class LaunchError(Exception):
    """The runner cannot be launched; the message says why (shown as its reason)."""


def machine_types(record: AppRecord) -> list[str]:
    wanted = record.options.machine_type
    return [wanted] if isinstance(wanted, str) else list(wanted)


def asked_for(inventory: Inventory, types: list[str]) -> Allocation:
    """For a backend that places runners itself: the first type, unplaced."""
    machine = inventory.catalog[types[0]]
    return Allocation(machine.name, machine.cpus, machine.memory_mb)


def bundle_dir(config: PlatformConfig, digest: str) -> Path:
    return config.data_dir / "bundles" / digest


def build_launch(
    config: PlatformConfig,
    record: AppRecord,
    runner: Runner,
    backend: Backend,
    allocation: Allocation,
    inventory: Inventory,
    secrets: Callable[[str], dict[str, str]] | None,
) -> RunnerLaunch:
    options = record.options
    environment = (
        Environments(config.data_dir).get(record.spec.environment)
        if record.spec.environment
        else None
    )
    python, env_vars = runner_setup(config.data_dir, environment)
    try:
        secret_env = secrets(record.owner) if secrets else {}
    except Exception as exc:
        raise LaunchError(f"its secrets could not be read: {exc}") from exc
    return RunnerLaunch(
        runner_id=runner.id,
        spec=record.spec.model_copy(update={"options": options}),
        revision=record.revision,
        bundle_dir=bundle_dir(config, record.spec.bundle_digest or ""),
        log_path=runner.log_path,
        env={
            **secret_env,  # first: the platform's own variables win
            **env_vars,
            "TIDAL_RUNNER_ID": runner.id,
            "TIDAL_APP": record.name,
            "TIDAL_REVISION": str(record.revision),
            "TIDAL_MACHINE_TYPE": allocation.machine_type,
            # What endpoints print while serving a request, with its id (App runners).
            "TIDAL_REQUEST_LOG": str(runner.log_path.with_suffix(".requests.jsonl")),
            # Only the GPUs this runner holds; none at all on a CPU machine type.
            "CUDA_VISIBLE_DEVICES": ",".join(allocation.gpu_ids),
        },
        isolate_network=backend.can_share_port(),
        owner=record.owner,
        templates=templates_asked(
            options.runner_templates, options.max_concurrency or config.default_max_concurrency
        ),
        data_dir=data_root(config.data_dir),
        python=python,
        machine_types=tuple(machine_types(record)),
        machine_type=allocation.machine_type,
        cpus=allocation.cpus,
        memory_mb=allocation.memory_mb,
        gpu_ids=allocation.gpu_ids,
        num_gpus=(
            len(allocation.gpu_ids)
            if not backend.own_placement
            else inventory.gpus_needed(inventory.catalog[allocation.machine_type], options.num_gpus)
        ),
    )
