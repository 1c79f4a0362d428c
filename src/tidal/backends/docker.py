"""The docker backend: each runner is a container on a Docker engine (issue 6, in progress)."""

from __future__ import annotations

from collections.abc import Mapping

from tidal.backends.base import Backend, BackendUnavailable
from tidal.config import PlatformConfig


def open_docker_backend(config: PlatformConfig, env: Mapping[str, str]) -> Backend:
    raise BackendUnavailable("the docker backend is not built yet")
