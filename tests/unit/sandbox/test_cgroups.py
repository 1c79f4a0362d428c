"""cgroup layouts: v1, v2 and the hybrid these machines have, on a fake tree of files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidal.sandbox.cgroups import CgroupTree, find_hierarchies
from tidal.sandbox.limits import Limits

HYBRID = """\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 30 0:29 / {root}/cpu rw - cgroup cgroup rw,cpu
34 30 0:30 / {root}/memory rw - cgroup cgroup rw,memory
35 30 0:31 / {root}/pids rw - cgroup cgroup rw,pids
36 30 0:32 / {root}/cpuacct rw - cgroup cgroup rw,cpuacct
"""


def test_hybrid_uses_v1_where_the_unified_tree_lacks_the_controller(tmp_path: Path) -> None:
    found = find_hierarchies(HYBRID.format(root=tmp_path))
    assert {c: (h.mount, h.v2) for c, h in found.items()} == {
        "cpu": (tmp_path / "cpu", False),
        "memory": (tmp_path / "memory", False),
        "pids": (tmp_path / "pids", False),
    }


def test_v2_wins_where_it_offers_the_controller(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    found = find_hierarchies(f"31 25 0:27 / {tmp_path} rw - cgroup2 cgroup2 rw\n")
    assert all(h.v2 and h.mount == tmp_path for h in found.values())
    assert set(found) == {"cpu", "memory", "pids"}


def _fake_v2(root: Path) -> None:
    """What the kernel would show: enabling a controller in a parent gives its files to
    the children (here, the files are made by hand where the test reads them)."""
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "cgroup.subtree_control").write_text("")


def test_v2_limits_are_written_and_controllers_enabled_down_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_v2(tmp_path)
    original_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        original_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]
        (self / "cgroup.subtree_control").touch()
        (self / "memory.swap.max").touch()

    monkeypatch.setattr(Path, "mkdir", mkdir)
    found = find_hierarchies(f"31 25 0:27 / {tmp_path} rw - cgroup2 cgroup2 rw\n")
    tree = CgroupTree(found, "p1")
    tree._prepare()
    group = tree.create("r-1", Limits(cpus=0.5, memory_mb=512, pids=64))
    folder = tmp_path / "tidal" / "p1" / "r-1"
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (tmp_path / "tidal" / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (folder / "cpu.max").read_text() == "50000 100000"
    assert (folder / "memory.max").read_text() == str(512 * 1024 * 1024)
    assert (folder / "memory.swap.max").read_text() == "0"
    assert (folder / "pids.max").read_text() == "64"
    (folder / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert group.oom_kills() == 1
    assert [g.folders["memory"] for g in tree.existing()] == [folder]


def test_v1_limits_and_oom_count(tmp_path: Path) -> None:
    for c in ("cpu", "memory", "pids"):
        (tmp_path / c).mkdir()
    (tmp_path / "memory" / "memory.memsw.limit_in_bytes").parent.mkdir(exist_ok=True)
    found = find_hierarchies(HYBRID.format(root=tmp_path))
    tree = CgroupTree(found, "p1")
    tree._prepare()
    group = tree.create("r-1", Limits(cpus=1, memory_mb=1024, pids=100))
    assert (tmp_path / "cpu/tidal/p1/r-1/cpu.cfs_quota_us").read_text() == "100000"
    assert (tmp_path / "memory/tidal/p1/r-1/memory.limit_in_bytes").read_text() == str(1 << 30)
    assert (tmp_path / "pids/tidal/p1/r-1/pids.max").read_text() == "100"
    (tmp_path / "memory/tidal/p1/r-1/memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"
    )
    assert group.oom_kills() == 2


def test_a_platform_folder_removed_while_empty_is_made_again(tmp_path: Path) -> None:
    """An operator clearing leftovers may `rmdir` a live platform's empty folder; its
    next runner still gets its cgroup."""
    for c in ("cpu", "memory", "pids"):
        (tmp_path / c).mkdir()
    tree = CgroupTree(find_hierarchies(HYBRID.format(root=tmp_path)), "p1")
    tree._prepare()
    assert tree.platforms() == ["p1"]
    for c in ("cpu", "memory", "pids"):
        (tmp_path / c / "tidal" / "p1" / "memory.use_hierarchy").unlink(missing_ok=True)
        (tmp_path / c / "tidal" / "p1").rmdir()
    tree.create("r-1", Limits(cpus=1, memory_mb=1024, pids=100))
    assert (tmp_path / "pids/tidal/p1/r-1/pids.max").read_text() == "100"
