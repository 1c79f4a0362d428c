"""A revision whose backend is not open at a restart (Docker down, say) waits for it,
answering 503 naming it, instead of running its runners on another backend."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from faults_support import deploy

from tidal.testing import start_platform

pytestmark = pytest.mark.slow


def test_a_revision_never_runs_on_another_backend(tmp_path: Path) -> None:
    (tmp_path / "tidal.toml").write_text(
        'backends = ["local"]\n[host]\ncpus = 64\nmemory_mb = 131072\n'
    )
    with start_platform(tmp_path) as first:
        deploy(first, "faulty")
    # As if deployed while a Docker engine answered: the revision is docker's.
    with sqlite3.connect(tmp_path / "tidal.db") as db:
        (spec_json,) = db.execute("SELECT spec_json FROM revisions").fetchone()
        spec = json.loads(spec_json)
        assert spec["backend"] == "local"
        spec["backend"] = "docker"
        db.execute("UPDATE revisions SET spec_json = ?", (json.dumps(spec),))
    with start_platform(tmp_path) as second, second.http() as http:
        resp = http.post("/local/faulty/run")
        assert resp.status_code == 503, resp.text
        assert resp.json()["error_type"] == "backend_unavailable"
        assert "runs on the docker backend" in resp.json()["detail"]
        assert http.get("/api/v1/apps/faulty/runners").json() == []
