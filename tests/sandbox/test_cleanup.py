"""What a sandboxed platform leaves on the host once it is gone: none of its cgroup
folders (v1 or v2) and none of its firewall rules, whether it stopped, or was killed
and a later platform started; a live platform's are never touched meanwhile."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tidal.sandbox.cgroups import MOUNTINFO, find_hierarchies
from tidal.sandbox.launch import platform_name
from tidal.testing import PlatformProcess, start_platform, wait_for

pytestmark = pytest.mark.slow

APPS = Path(__file__).parent / "apps"
CONFIG = "health_check_interval_seconds = 0.5\n[host]\ncpus = 64\nmemory_mb = 131072\n"


@pytest.fixture(autouse=True)
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the sandbox tier runs the platform as root, as the README does")


def tidal_folders() -> list[Path]:
    """`<hierarchy>/tidal` of each hierarchy holding a controller the sandbox uses."""
    mounts = {h.mount for h in find_hierarchies(MOUNTINFO.read_text()).values()}
    return [m / "tidal" for m in sorted(mounts)]


def platform_folders(data_dir: Path) -> list[Path]:
    """The cgroup folders of every platform process run on `data_dir`."""
    mine = platform_name(data_dir)
    return [p for top in tidal_folders() for p in top.glob(f"{mine}*") if p.is_dir()]


def rules_of(owner: str) -> list[str]:
    found = []
    for table in ("filter", "nat"):
        listing = subprocess.run(["iptables", "-w", "-t", table, "-S"],
                                 capture_output=True, text=True, check=True)  # fmt: skip
        found += [line for line in listing.stdout.splitlines() if f"tidal:{owner}" in line]
    return found


def busy(folder: Path) -> bool:
    """Some process is still in one of the folder's runner cgroups."""
    return any(
        (runner / "cgroup.procs").read_text().strip()
        for runner in folder.iterdir()
        if runner.is_dir()
    )


def run_online(stack: ExitStack, tmp_path: Path, name: str) -> tuple[PlatformProcess, str]:
    """A sandboxed platform running the `internet` app, one call answered; its owner
    name (its cgroup folder's name)."""
    data_dir = tmp_path / name
    data_dir.mkdir()
    (data_dir / "tidal.toml").write_text(CONFIG)
    platform = stack.enter_context(start_platform(data_dir))
    platform.cli("deploy", "online.py::Online", "--app-name", "online", cwd=APPS)
    with platform.http(timeout=120) as http:
        resp = http.post("/local/online/hello")
    assert resp.status_code == 200, resp.text
    folders = platform_folders(data_dir)
    assert len({f.name for f in folders}) == 1, folders
    owner = folders[0].name
    # What the checks below must not find after it is gone, found while it runs.
    assert any(runner.is_dir() for f in folders for runner in f.iterdir()), folders
    assert len(rules_of(owner)) == 6, rules_of(owner)
    return platform, owner


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def test_a_stopped_platform_leaves_no_cgroup_folder_nor_rule(tmp_path: Path) -> None:
    with ExitStack() as own:
        platform, owner = run_online(own, tmp_path, "a")
    assert platform.process.returncode is not None
    assert platform_folders(platform.data_dir) == []
    assert rules_of(owner) == []


def test_a_killed_platforms_leftovers_go_at_the_next_start_and_a_live_ones_stay(
    stack: ExitStack, tmp_path: Path
) -> None:
    live, live_owner = run_online(stack, tmp_path, "live")
    with ExitStack() as own:
        killed, killed_owner = run_online(own, tmp_path, "killed")
        killed.process.kill()  # no stop: its folders and rules stay behind
        killed.process.wait()
    # Its sandboxes end with it (bubblewrap's --die-with-parent), its folders remain.
    left = platform_folders(killed.data_dir)
    assert left and rules_of(killed_owner)
    wait_for(lambda: not any(busy(f) for f in left), timeout=30, what="its runners to end")

    later = tmp_path / "later"
    later.mkdir()
    (later / "tidal.toml").write_text(CONFIG)
    with start_platform(later):
        assert platform_folders(killed.data_dir) == []
        assert rules_of(killed_owner) == []
        # The live platform's folders and rules are its own until it stops.
        assert {f.name for f in platform_folders(live.data_dir)} == {live_owner}
        assert len(rules_of(live_owner)) == 6
        with live.http(timeout=120) as http:
            assert http.post("/local/online/hello").status_code == 200
