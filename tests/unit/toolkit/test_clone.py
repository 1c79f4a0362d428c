"""clone_repository against a real git repository made here, over file://."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tidal.toolkit.clone import CloneError, clone_repository


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def commit(repo: Path, text: str) -> str:
    if not repo.exists():
        repo.mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
    (repo / "mod_clone_test.py").write_text(f"VALUE = {text!r}\n")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", text)
    return git(repo, "rev-parse", "HEAD")


def test_pinned_clone_is_made_once_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDAL_DATA_DIR", str(tmp_path / "data"))
    origin = tmp_path / "origin" / "tool.git"
    first = commit(origin, "one")
    second = commit(origin, "two")
    url = origin.as_uri()
    path = clone_repository(url, commit_hash=first)
    assert path == tmp_path / "data" / ".tidal" / "repos" / f"tool-{first[:8]}"
    assert git(path, "rev-parse", "HEAD") == first
    (path / "left-by-first-runner").write_text("x")
    assert clone_repository(url, commit_hash=first) == path  # reused, not cloned again
    assert (path / "left-by-first-runner").exists()
    forced = clone_repository(url, commit_hash=first, force=True)
    assert forced == path and not (path / "left-by-first-runner").exists()
    # An unpinned clone is HEAD, and include_to_path makes it importable.
    latest = clone_repository(url, target_dir=tmp_path / "elsewhere", include_to_path=True)
    try:
        assert git(latest, "rev-parse", "HEAD") == second
        assert str(latest) == sys.path[0]
        assert (latest / "mod_clone_test.py").read_text() == "VALUE = 'two'\n"
    finally:
        sys.path.remove(str(latest))
    leftovers = [p.name for p in path.parent.iterdir() if ".clone-" in p.name]
    assert leftovers == []  # temporary folders are gone


def test_failures_name_the_url_and_the_reason(tmp_path: Path) -> None:
    missing = (tmp_path / "nothing.git").as_uri()
    with pytest.raises(CloneError, match=r"nothing\.git.*git clone failed"):
        clone_repository(missing, target_dir=tmp_path / "t")
    origin = tmp_path / "o"
    commit(origin, "one")
    with pytest.raises(CloneError, match="git checkout failed"):
        clone_repository(origin.as_uri(), commit_hash="0123456789abcdef", target_dir=tmp_path / "t")
    with pytest.raises(ValueError, match="too short"):
        clone_repository(origin.as_uri(), commit_hash="abc")
    assert not (tmp_path / "t" / "o-01234567").exists()
