"""A profile points the CLI at a platform: no TIDAL_URL, another working directory."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tidal.backends.local import free_port
from tidal.testing import start_platform

pytestmark = pytest.mark.slow

SEED = Path(__file__).parents[2] / "examples" / "direct_server"


def test_profile_deploy_call_and_doctor(tmp_path: Path) -> None:
    data_dir, config_dir, work = tmp_path / "platform", tmp_path / "config", tmp_path / "work"
    data_dir.mkdir()
    work.mkdir()
    (data_dir / "tidal.toml").write_text("[host]\ncpus = 64\nmemory_mb = 131072\n")
    for name in ("main.py", "app.py"):
        shutil.copy(SEED / name, work / name)
    env = {k: v for k, v in os.environ.items() if k not in ("TIDAL_URL", "TIDAL_KEY")}
    env |= {"TIDAL_CONFIG_DIR": str(config_dir), "COLUMNS": "200", "NO_COLOR": "1"}

    def tidal(*args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "tidal", *args],
            cwd=work, env=env | extra, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"tidal {' '.join(args)} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    with start_platform(data_dir) as platform:
        tidal("profile", "add", "remote", "--url", platform.url)
        tidal("profile", "use", "remote")
        profiles = config_dir / "profiles.toml"
        assert stat.S_IMODE(profiles.stat().st_mode) == 0o600
        listed = json.loads(tidal("profile", "list", "--json").stdout)
        assert listed == [{"name": "remote", "url": platform.url, "key": None, "current": True}]

        view = json.loads(tidal("deploy", "app.py::run_server", "--json").stdout)
        assert view["url"] == f"{platform.url}/local/run-server"
        apps = json.loads(tidal("apps", "list", "--json").stdout)
        assert [a["name"] for a in apps] == ["run-server"]
        assert "local/run-server" in tidal("apps", "list").stdout
        resp = httpx.get(f"{view['url']}/", timeout=120)
        assert resp.status_code == 200
        assert resp.json() == {"hello": "world"}

        done = tidal("doctor")
        rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines()
                if line.count("│") >= 3}  # fmt: skip
        assert "✓" in rows["connection"], done.stdout
        assert platform.url in rows["connection"]
        assert "auth not enforced by this platform yet" in done.stdout
        report = json.loads(tidal("doctor", "--json").stdout)
        checks = {c["check"]: c for c in report["checks"]}
        assert report["ok"] and checks["connection"]["status"] == "ok"
        assert checks["connection"]["data"]["source"] == "profile 'remote'"
        assert checks["backends"]["data"]["backends"] == ["local"]
        assert {t["name"] for t in checks["machines"]["data"]["machine_types"]} >= {"XS", "S"}
        assert checks["disk"]["data"]["free_bytes"] > 0  # the data dir is on this machine
        assert checks["python"]["data"]["interpreters"]

        # TIDAL_URL and then --url override the profile.
        dead = f"http://127.0.0.1:{free_port()}"
        failed = tidal("apps", "list", check=False, TIDAL_URL=dead)
        assert failed.returncode == 1 and f"{dead} (from TIDAL_URL)" in failed.stderr
        failed = tidal("--url", dead, "apps", "list", check=False)
        assert failed.returncode == 1 and f"{dead} (from --url)" in failed.stderr
        doctor = tidal("--url", dead, "doctor", check=False)
        assert doctor.returncode == 1
