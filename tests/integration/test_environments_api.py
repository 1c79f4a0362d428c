"""POST /api/v1/environments: progress as JSON lines, one build for concurrent asks."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidal.backends.local import free_port
from tidal.config import PlatformConfig
from tidal.environments import Environments
from tidal.testing import platform_in_thread

pytestmark = pytest.mark.slow


def events(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with (
        httpx.Client(timeout=300) as http,
        http.stream("POST", f"{url}/api/v1/environments", json=body) as resp,
    ):
        return [json.loads(line) for line in resp.iter_lines() if line]


def test_concurrent_asks_build_once_and_stream_progress(tmp_path: Path) -> None:
    config = PlatformConfig(data_dir=tmp_path, port=free_port(), auth=False)
    body = {"requirements": ["six==1.16.0"]}
    with platform_in_thread(config), ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: events(config.url, body), range(3)))
    ready = [r[-1] for r in results]
    assert len({e["ready"] for e in ready}) == 1  # one environment for all three
    built = [r for r in results if any("log" in e for e in r)]
    assert len(built) == 1  # built once; the others waited and found it
    assert any("creating a Python" in e.get("log", "") for e in built[0])
    assert len(list((tmp_path / "envs").iterdir())) == 1


def test_garbage_collection_keeps_what_is_used_or_recent(tmp_path: Path) -> None:
    envs = Environments(tmp_path)
    for name in ("used", "recent", "stale"):
        (tmp_path / "envs" / name).mkdir(parents=True)
        (tmp_path / "envs" / name / "tidal-env.json").write_text("{}")
    old = time.time() - 3600
    for name in ("used", "stale"):
        os.utime(tmp_path / "envs" / name / "tidal-env.json", (old, old))
    removed = envs.collect_garbage({"used"}, older_than_seconds=600)
    assert removed == ["stale"]
    assert sorted(p.name for p in (tmp_path / "envs").iterdir()) == ["recent", "used"]
