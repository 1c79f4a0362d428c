"""Fixtures shared by every tier: a real platform process on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tidal.testing import PlatformProcess, start_platform

APPS = Path(__file__).parent / "e2e" / "apps"


# Test apps' runners are tiny; account them against a roomy host so that a module's
# many apps never wait for CPUs on a 2-core CI machine (placement has its own tests).
ROOMY = "health_check_interval_seconds = 0.5\n[host]\ncpus = 64\nmemory_mb = 131072\n"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    data_dir = tmp_path_factory.mktemp("platform")
    (data_dir / "tidal.toml").write_text(ROOMY)
    with start_platform(data_dir) as running:
        yield running


@pytest.fixture
def apps_dir() -> Path:
    return APPS
