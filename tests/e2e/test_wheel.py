"""The wheel built from the repository's tracked files (what a clean clone holds) carries
the dashboard's vendored assets: installed into a fresh venv, with no node or npm on
PATH, `tidal server` serves /dashboard and its libraries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx
import pytest

from tidal.backends.local import free_port
from tidal.testing import stop_process, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
VENDORED = ("chart.umd.min.js", "jsoneditor.js")


def clean_copy(dest: Path) -> Path:
    """The repository's tracked files only, as a fresh clone has them (no built assets
    lying around in the work tree)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def test_the_wheel_serves_the_dashboard_without_npm(tmp_path: Path) -> None:
    source = clean_copy(tmp_path / "clone")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(dist), str(source)],
        check=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("tidal-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for asset in VENDORED:
        assert f"tidal/dashboard/static/vendor/{asset}" in names

    # A fresh venv holding only the wheel; its dependencies come from this venv's
    # site-packages as a plain path (so this checkout's editable tidal is not seen).
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"), "install",
         "--quiet", "--no-deps", str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    site = subprocess.run(
        [str(fresh / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    path = str(fresh / "bin")  # no node, no npm
    assert shutil.which("npm", path=path) is None and shutil.which("node", path=path) is None
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PATH": path}
    where = subprocess.run(
        [str(fresh / "bin" / "python"), "-c", "import tidal.dashboard; print(tidal.dashboard.__file__)"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout  # fmt: skip
    assert where.startswith(site), where

    port = free_port()
    data_dir = tmp_path / "data"
    with (tmp_path / "platform.log").open("wb") as log:
        server = subprocess.Popen(
            [str(fresh / "bin" / "tidal"), "server", "--port", str(port), "--data-dir",
             str(data_dir), "--no-auth", "--backend", "local",
             "--sandbox", "off"],  # no runner starts here: the dashboard is what is tested
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert server.poll() is None, (tmp_path / "platform.log").read_text()
            try:
                return httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=60, what="the installed platform to answer")
        page = httpx.get(f"{url}/dashboard/", follow_redirects=True, timeout=10)
        assert page.status_code == 200, page.text
        assert "make assets" not in page.text
        for asset in VENDORED:
            assert f"/dashboard/static/vendor/{asset}" in page.text
            got = httpx.get(f"{url}/dashboard/static/vendor/{asset}", timeout=10)
            assert got.status_code == 200
            assert got.headers["content-type"].startswith("text/javascript")
            assert len(got.content) > 10_000
    finally:
        stop_process(server)
