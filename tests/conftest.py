"""Fixtures shared by every tier: a real platform process on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tidal.testing import PlatformProcess, start_platform

APPS = Path(__file__).parent / "e2e" / "apps"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    with start_platform(tmp_path_factory.mktemp("platform")) as running:
        yield running


@pytest.fixture
def apps_dir() -> Path:
    return APPS
