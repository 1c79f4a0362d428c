"""Which machine type a runner gets and whether the host has room for it.

Pure bookkeeping (no I/O): the controller asks before starting a runner and
gives back when the runner ends, so CPUs, memory and GPUs are never
over-committed and each GPU runner gets devices of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tidal.machines import HostCapacity, MachineType, unknown_type_hint


@dataclass(frozen=True)
class Allocation:
    machine_type: str
    cpus: float
    memory_mb: int
    gpu_ids: tuple[str, ...] = ()


@dataclass
class Inventory:
    host: HostCapacity
    catalog: dict[str, MachineType]
    held: dict[str, Allocation] = field(default_factory=dict)  # runner id -> allocation

    def free(self) -> tuple[float, int, list[str]]:
        cpus = self.host.cpus - sum(a.cpus for a in self.held.values())
        memory = self.host.memory_mb - sum(a.memory_mb for a in self.held.values())
        used = {g for a in self.held.values() for g in a.gpu_ids}
        return cpus, memory, [g.id for g in self.host.gpus if g.id not in used]

    def gpus_needed(self, machine: MachineType, num_gpus: int | None) -> int:
        return machine.gpus if num_gpus is None else num_gpus

    def check(self, machine_types: list[str], num_gpus: int | None) -> str | None:
        """Why an app asking for these types can never run here, or None."""
        unknown = [t for t in machine_types if t not in self.catalog]
        if unknown:
            return (
                f"unknown machine type {unknown[0]!r}; this platform offers: "
                f"{', '.join(sorted(self.catalog))}; {unknown_type_hint(unknown[0], self.host)}"
            )
        reasons = []
        for name in machine_types:
            machine = self.catalog[name]
            gpus = self.gpus_needed(machine, num_gpus)
            usable = [g for g in self.host.gpus if machine.gpu_model in (None, g.model)]
            if gpus > len(usable):
                reasons.append(f"{name} with {gpus} GPU(s): the host has {len(usable)} usable")
            elif machine.cpus > self.host.cpus or machine.memory_mb > self.host.memory_mb:
                reasons.append(f"{name} is larger than the host")
            else:
                return None
        return "no machine type can ever fit: " + "; ".join(reasons)

    def allocate(
        self, runner_id: str, machine_types: list[str], num_gpus: int | None
    ) -> Allocation | str:
        """Hold resources for a runner on the first type that fits, or say why none does."""
        placed = self._first_fit(machine_types, num_gpus, *self.free())
        if isinstance(placed, Allocation):
            self.held[runner_id] = placed
        return placed

    def fits_after(
        self, machine_types: list[str], num_gpus: int | None, freed: list[Allocation]
    ) -> bool:
        """Whether a runner of these types would fit once `freed` are given back."""
        cpus, memory, free_gpus = self.free()
        cpus += sum(a.cpus for a in freed)
        memory += sum(a.memory_mb for a in freed)
        free_gpus = free_gpus + [g for a in freed for g in a.gpu_ids]
        return isinstance(
            self._first_fit(machine_types, num_gpus, cpus, memory, free_gpus), Allocation
        )

    def _first_fit(
        self,
        machine_types: list[str],
        num_gpus: int | None,
        cpus: float,
        memory: int,
        free_gpus: list[str],
    ) -> Allocation | str:
        waits = []
        for name in machine_types:
            machine = self.catalog[name]
            gpus = self.gpus_needed(machine, num_gpus)
            usable = [
                g.id for g in self.host.gpus
                if g.id in free_gpus and machine.gpu_model in (None, g.model)
            ]  # fmt: skip
            # GPUs first: when they are what is missing, the reason should say so.
            if gpus > len(usable):
                waits.append(f"{name} needs {gpus} GPU(s), {len(usable)} free")
            elif machine.cpus > cpus + 1e-9:
                waits.append(f"{name} needs {machine.cpus:g} CPU, {cpus:g} free")
            elif machine.memory_mb > memory:
                waits.append(f"{name} needs {machine.memory_mb} MB, {memory} MB free")
            else:
                return Allocation(name, machine.cpus, machine.memory_mb, tuple(usable[:gpus]))
        return "waiting for capacity: " + "; ".join(waits)

    def release(self, runner_id: str) -> None:
        self.held.pop(runner_id, None)
