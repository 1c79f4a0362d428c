"""Two platforms on one PostgreSQL database, as gateway replicas behind a load
balancer: an app deployed, scaled or deleted through one is served (or not) by the
other too (told by NOTIFY, not by the slow poll set here), and queued work flows
through both."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidal.testing import start_platform, wait_for
from tidal.testing_postgres import PostgresServer

pytestmark = pytest.mark.slow

ECHO = Path(__file__).parent / "apps" / "echo"
# Polling slower than any wait below: changes must arrive by PostgreSQL's NOTIFY.
NOTIFY_ONLY = "registry_poll_seconds = 300\n[host]\ncpus = 64\nmemory_mb = 131072\n"


def test_a_deploy_through_one_replica_is_served_by_the_other(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.create_database()
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    for folder in (a_dir, b_dir):
        folder.mkdir()
        (folder / "tidal.toml").write_text(NOTIFY_ONLY)
    # Code bundles live on storage the replicas share (docs/scaling-out.md).
    (a_dir / "bundles").mkdir()
    (b_dir / "bundles").symlink_to(a_dir / "bundles")
    with (
        start_platform(a_dir, database_url=url) as a,
        start_platform(b_dir, database_url=url) as b,
        b.http() as http_b,
    ):
        a.cli("deploy", "scaling.py::burst", "--app-name", "shared", cwd=ECHO)
        resp = wait_for(
            lambda: (r := http_b.get("/local/shared/env")).status_code == 200 and r,
            timeout=60,
            what="replica b to serve the app deployed through a",
        )
        assert resp.json()["TIDAL_REVISION"] == "1"
        # A scaling change through a reaches b's controller: it keeps two runners warm.
        a.cli("apps", "scale", "shared", "--min-concurrency", "2")
        wait_for(
            lambda: (
                sum(
                    r["state"] in ("idle", "running")
                    for r in http_b.get("/api/v1/apps/shared/runners").json()
                )
                == 2
            ),
            timeout=60,
            what="replica b to keep two runners for min_concurrency=2",
        )
        # Queued through b, run by whichever replica claims it.
        queued = http_b.post("/queue/local/shared/work", json={"n": 1}).json()
        wait_for(
            lambda: (
                http_b.get(f"/queue/local/shared/requests/{queued['request_id']}/status").json()[
                    "status"
                ]
                == "COMPLETED"
            ),
            timeout=60,
            what="the queued request",
        )
        # Deleted through a: b stops serving it and stops its runners.
        a.cli("apps", "delete", "shared")
        wait_for(
            lambda: http_b.get("/local/shared/env").status_code == 404,
            timeout=30,
            what="replica b to drop the deleted app",
        )
        wait_for(lambda: not b.runner_pids(), timeout=30, what="b's runners to stop")
