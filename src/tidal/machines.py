"""Machine types (name → CPUs, memory, GPUs) and what this host can hand out.

The default catalog offers fal's CPU names (XS, S, M, L) that fit this host,
and one `GPU-<MODEL>` type per GPU model found (nvidia-smi). A TOML file can
add or replace types and set the host's capacity, e.g. a fake GPU inventory
on a CPU machine for tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MachineType:
    name: str
    cpus: float
    memory_mb: int
    gpus: int = 0
    gpu_model: str | None = None


@dataclass(frozen=True)
class Gpu:
    id: str  # what CUDA_VISIBLE_DEVICES takes
    model: str


@dataclass
class HostCapacity:
    """What the local backend may hand out to runners on this host."""

    cpus: float
    memory_mb: int
    gpus: list[Gpu] = field(default_factory=list)


# fal's CPU machine types.
FAL_CPU_TYPES = (
    MachineType("XS", 0.5, 512),
    MachineType("S", 1, 1024),
    MachineType("M", 2, 8192),
    MachineType("L", 4, 32768),
)


def host_memory_mb() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 4096


def detect_gpus() -> list[Gpu]:
    """NVIDIA GPUs through nvidia-smi (NVML's own tool); none when it is absent."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        index, _, name = line.partition(",")
        gpus.append(Gpu(index.strip(), gpu_model_name(name.strip())))
    return gpus


def gpu_model_name(full_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100'; 'Tesla T4' -> 'T4'."""
    words = [w for w in re.split(r"[\s_]+", full_name) if w]
    words = [w for w in words if w.upper() not in {"NVIDIA", "TESLA", "GEFORCE", "QUADRO"}]
    return words[0].upper() if words else "GPU"


def default_catalog(host: HostCapacity) -> dict[str, MachineType]:
    catalog = {
        t.name: t for t in FAL_CPU_TYPES if t.cpus <= host.cpus and t.memory_mb <= host.memory_mb
    }
    models = sorted({g.model for g in host.gpus})
    for model in models:
        # A GPU type gets a share of the host's CPUs and memory per GPU, leaving a
        # share for CPU runners too (all of a 1-GPU host would block every CPU app).
        shares = len(host.gpus) + 1
        catalog[f"GPU-{model}"] = MachineType(
            f"GPU-{model}",
            cpus=max(1.0, host.cpus // shares),
            memory_mb=host.memory_mb // shares,
            gpus=1,
            gpu_model=model,
        )
    return catalog


class MachineConfigError(ValueError):
    pass


def load_machines(settings: dict[str, Any]) -> tuple[HostCapacity, dict[str, MachineType]]:
    """The host's capacity and the catalog, from the `[host]` and `[machine_types.*]`
    tables of the platform's TOML (both optional)."""
    host_cfg = settings.get("host", {})
    gpus: list[Gpu]
    if "gpus" in host_cfg or "gpu_ids" in host_cfg:
        # A configured inventory (also how tests fake GPUs on a CPU machine).
        model = str(host_cfg.get("gpu_model", "GPU")).upper()
        ids = host_cfg.get("gpu_ids") or [str(i) for i in range(int(host_cfg["gpus"]))]
        gpus = [Gpu(str(i), model) for i in ids]
    else:
        gpus = detect_gpus()
    host = HostCapacity(
        cpus=float(host_cfg.get("cpus", os.cpu_count() or 1)),
        memory_mb=int(host_cfg.get("memory_mb", host_memory_mb())),
        gpus=gpus,
    )
    catalog = default_catalog(host)
    for name, raw in settings.get("machine_types", {}).items():
        unknown = set(raw) - {"cpus", "memory_mb", "gpus", "gpu_model"}
        if unknown:
            raise MachineConfigError(
                f"machine type {name!r}: unknown setting(s) {', '.join(sorted(unknown))}; "
                "use cpus, memory_mb, gpus, gpu_model"
            )
        try:
            catalog[name] = MachineType(
                name,
                cpus=float(raw.get("cpus", 1)),
                memory_mb=int(raw.get("memory_mb", 1024)),
                gpus=int(raw.get("gpus", 0)),
                gpu_model=raw.get("gpu_model"),
            )
        except (TypeError, ValueError) as exc:
            raise MachineConfigError(f"machine type {name!r}: {exc}") from None
    return host, catalog


def unknown_type_hint(name: str, host: HostCapacity) -> str:
    """How to run an app asking for machine type `name`, which this platform lacks, on
    this host anyway: an explicit mapping in the platform's tidal.toml."""
    table = f"[machine_types.{name}]"
    if not name.upper().startswith("GPU"):
        return f"to add it, give tidal.toml a {table} table with cpus and memory_mb"
    if not host.gpus:
        return (
            f"this host has no GPUs; to run it here on CPU anyway (for development), give "
            f"tidal.toml a {table} table with cpus and memory_mb and no gpus"
        )
    models = sorted({g.model for g in host.gpus})
    return (
        f"this host's GPUs are {', '.join(models)}; to run it on them anyway, give tidal.toml "
        f'a {table} table with gpus = 1 and gpu_model = "{models[0]}" (and cpus, memory_mb)'
    )
