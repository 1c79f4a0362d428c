"""Open the backends a platform runs runners on, and say why the others can't."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tidal.backends.base import Backend, BackendUnavailable
from tidal.backends.choice import DOCKER, LOCAL, RAY
from tidal.backends.local import LocalBackend
from tidal.config import PlatformConfig
from tidal.sandbox import Sandbox, SandboxUnavailable
from tidal.sandbox.launch import SandboxSettings

log = logging.getLogger("tidal")


@dataclass
class Backends:
    usable: dict[str, Backend] = field(default_factory=dict)
    unusable: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Backend:
        return self.usable[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.usable.values())


Factory = Callable[[PlatformConfig, Mapping[str, str]], Backend]


def _local(config: PlatformConfig, env: Mapping[str, str]) -> Backend:
    sandbox = None
    if config.sandbox:
        first, last = config.sandbox_uid_range
        sandbox = Sandbox(
            config.data_dir,
            SandboxSettings(
                uid_first=first,
                uid_count=last - first + 1,
                pids_max=config.sandbox_pids_max,
                startup_cpus=config.sandbox_startup_cpus,
                egress_subnet=config.sandbox_egress_subnet,
            ),
        )
        try:
            sandbox.check()
        except SandboxUnavailable as exc:
            raise BackendUnavailable(str(exc)) from None
    return LocalBackend(
        config.data_dir / "runners",
        isolate=config.isolate_network,
        env=env,
        sandbox=sandbox,
        templates=config.runner_templates,
    )


def _docker(config: PlatformConfig, env: Mapping[str, str]) -> Backend:
    try:
        from tidal.backends.docker import open_docker_backend
    except ImportError as exc:
        raise BackendUnavailable(f"the docker backend is not installed ({exc})") from None
    return open_docker_backend(config, env)


def _ray(config: PlatformConfig, env: Mapping[str, str]) -> Backend:
    try:
        from tidal.backends.ray import open_ray_backend  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise BackendUnavailable(
            f"Ray is not installed ({exc}); install it with `pip install 'tidal[ray]'`"
        ) from None
    backend: Backend = open_ray_backend(config, env)
    return backend


FACTORIES: dict[str, Factory] = {LOCAL: _local, DOCKER: _docker, RAY: _ray}


def open_backends(config: PlatformConfig, env: Mapping[str, str]) -> Backends:
    """`config.backends` None means: local, plus docker when an engine answers."""
    explicit = config.backends is not None
    wanted = config.backends if config.backends is not None else [LOCAL, DOCKER]
    found = Backends()
    for name in wanted:
        factory = FACTORIES.get(name)
        if factory is None:
            raise BackendUnavailable(
                f"unknown backend {name!r}; choose from {', '.join(FACTORIES)}"
            )
        try:
            found.usable[name] = factory(config, env)
        except BackendUnavailable as exc:
            found.unusable[name] = str(exc)
            if explicit:
                log.warning("backend %s cannot run runners: %s", name, exc)
    if not found.usable:
        raise BackendUnavailable(
            "no backend can run runners: "
            + "; ".join(f"{k}: {v}" for k, v in found.unusable.items())
        )
    return found
