"""Which backend runs an app's runners: decided once per revision, at deploy.

Pure policy: the platform passes what it has (backends that work, and why the
others don't), the app's options and the deployer's `--local`; the answer is a
backend name and warnings to show, or an InvalidOptionError that says what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tidal.spec import AppOptions, InvalidOptionError

LOCAL = "local"
DOCKER = "docker"
RAY = "ray"

DOCKER_HINT = (
    "start a Docker engine (for example `dockerd`, or Podman's API service) and point "
    "the platform at it with DOCKER_HOST or `tidal server --backend docker`, or deploy "
    "with `--local` to run the app's code on the local backend without its image"
)


@dataclass(frozen=True)
class Choice:
    backend: str
    warnings: list[str] = field(default_factory=list)


def choose_backend(
    options: AppOptions,
    usable: Mapping[str, object],
    unusable: Mapping[str, str],
    machine_backends: Mapping[str, str],
    requested: str | None = None,
) -> Choice:
    """`usable`: backends that run runners now, in the platform's order of preference;
    `unusable`: backends that were asked for or probed, with why they don't work."""
    if requested is not None:
        if requested not in usable:
            why = unusable.get(requested, "it is not enabled on this platform")
            raise InvalidOptionError(
                f"backend {requested!r} cannot run this app: {why}. "
                f"Usable here: {', '.join(usable) or 'none'}."
            )
        warnings = []
        if requested == LOCAL and options.image is not None:
            warnings.append(
                "--local: the app's container image is ignored; its code runs in the "
                "platform's Python environment (with its requirements, if any)"
            )
        return Choice(requested, warnings)
    if options.image is not None:
        if DOCKER in usable:
            return Choice(DOCKER)
        why = unusable.get(DOCKER, "no Docker engine is configured or reachable")
        raise InvalidOptionError(
            f"this app has a container image (image=...), which needs the docker backend, "
            f"but {why}. To fix: {DOCKER_HINT}."
        )
    types = (
        [options.machine_type] if isinstance(options.machine_type, str) else options.machine_type
    )
    for machine_type in types:
        mapped = machine_backends.get(machine_type)
        if mapped is None:
            continue
        if mapped in usable:
            return Choice(mapped)
        why = unusable.get(mapped, "it is not enabled on this platform")
        raise InvalidOptionError(
            f"machine_type {machine_type!r} runs on the {mapped!r} backend "
            f"(machine_backends in tidal.toml), which cannot run runners now: {why}"
        )
    # The first usable backend that runs plain code (docker needs an image).
    for name in usable:
        if name != DOCKER:
            return Choice(name)
    raise InvalidOptionError(
        "no backend here can run an app without a container image: add image=... "
        "or enable the local or ray backend (`tidal server --backend local`)"
    )
