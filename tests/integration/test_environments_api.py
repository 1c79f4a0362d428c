"""POST /api/v1/environments: progress as JSON lines, one build for concurrent asks;
POST /api/v1/images: a build that cannot run says why as its one line."""

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


def events(url: str, body: dict[str, Any], path: str = "environments") -> list[dict[str, Any]]:
    with (
        httpx.Client(timeout=300) as http,
        http.stream("POST", f"{url}/api/v1/{path}", json=body) as resp,
    ):
        assert resp.headers["content-type"] == "application/x-ndjson"
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


def test_an_image_build_without_the_docker_backend_streams_its_error(tmp_path: Path) -> None:
    config = PlatformConfig(data_dir=tmp_path, port=free_port(), auth=False, backends=["local"])
    body = {"image": {"kind": "registry", "ref": "python:3.11-slim"}}
    with platform_in_thread(config):
        lines = events(config.url, body, "images")
    assert len(lines) == 1 and set(lines[0]) == {"error"}, lines
    assert "needs the docker backend" in lines[0]["error"]


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


def test_queue_results_are_forgotten_after_their_retention(tmp_path: Path) -> None:
    from tidal.control.db import open_database
    from tidal.control.queue_store import QueueStore

    store = QueueStore(open_database(tmp_path / "q.db"))
    old = store.submit("local", "a", "POST", "/", "", [], b"", 0, False)
    fresh = store.submit("local", "a", "POST", "/", "", [], b"", 0, False)
    waiting = store.submit("local", "a", "POST", "/", "", [], b"", 0, False)
    for request_id in (old, fresh):
        store.claim_next("local", "a")
        store.complete(request_id, 200, [], b"{}")
    with store._engine.begin() as conn:  # completed an hour ago
        from sqlalchemy import text

        conn.execute(text("UPDATE queue_requests SET completed_at = 0 WHERE id = :i"), {"i": old})
    assert store.purge(older_than_seconds=600) == 1
    assert store.get(old) is None
    assert store.get(fresh) is not None and store.get(waiting) is not None
