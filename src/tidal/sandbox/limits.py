"""What a machine type allows a runner, and how an out-of-memory kill is told."""

from __future__ import annotations

from dataclasses import dataclass, replace

CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    cpus: float  # a CPU quota: 0.5 is half of one core's time
    memory_mb: int
    pids: int  # processes and threads together: what stops a fork bomb

    @property
    def cpu_quota_us(self) -> int:
        # At least 1 ms per period: the kernel refuses less.
        return max(1000, round(self.cpus * CPU_PERIOD_US))

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    def starting(self, boost_cpus: float) -> Limits:
        """While a runner starts (until it answers): at least `boost_cpus` of CPU, so that
        imports on a small machine type do not double a cold start."""
        return replace(self, cpus=max(self.cpus, boost_cpus))


def format_memory(memory_mb: int) -> str:
    if memory_mb >= 1024 and memory_mb % 1024 == 0:
        return f"{memory_mb // 1024} GB"
    if memory_mb >= 1024:
        return f"{memory_mb / 1024:.1f} GB"
    return f"{memory_mb} MB"


def out_of_memory_reason(machine_type: str, memory_mb: int) -> str:
    return f"out of memory: machine type {machine_type} allows {format_memory(memory_mb)}"
