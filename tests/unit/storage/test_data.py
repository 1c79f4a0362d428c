"""/data from outside a runner: path rules, links never followed, uploads all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidal.storage import data


@pytest.mark.parametrize("path", ["..", "a/../b", ".ssh/id", "a//b", "a/\x00", "x" * 256])
def test_paths_follow_the_file_stores_rules(path: str) -> None:
    with pytest.raises(data.DataPathError, match="is not a name /data files may have"):
        data.split_path(path)


def test_slashes_at_the_ends_are_ignored() -> None:
    assert data.split_path("/models/v1/") == ("models", "v1")
    assert data.split_path("") == data.split_path("/") == ()


def test_links_are_listed_never_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("no")
    root.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "file-link").symlink_to(outside / "secret")
    _, entries, _, _ = data.describe(root, "")
    assert {e.name: e.kind for e in entries} == {"escape": "link", "file-link": "link"}
    for path in ("escape/secret", "escape"):
        with pytest.raises(data.DataPathError, match="symbolic link"):
            data.describe(root, path) if "/" in path else data.open_file(root, path)
    with pytest.raises(data.DataPathError, match="symbolic link"):
        data.open_file(root, "file-link")
    with pytest.raises(data.DataPathError, match="symbolic link"):
        data.Upload(root, "escape/new", 10)
    assert data.remove(root, "escape", recursive=True) == "link"
    assert (outside / "secret").read_text() == "no"  # the link went, not its target


def test_an_upload_is_all_or_nothing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f").write_text("old")
    upload = data.Upload(root, "a/f", limit=8)
    upload.write(b"1234")
    with pytest.raises(data.DataTooLarge):
        upload.write(b"56789")
    upload.abort()
    assert (root / "a" / "f").read_text() == "old"
    assert sorted(p.name for p in (root / "a").iterdir()) == ["f"]  # no temporary left
    upload = data.Upload(root, "a/f", limit=8)
    upload.write(b"new")
    upload.commit()
    assert (root / "a" / "f").read_text() == "new"


def test_a_folder_goes_only_when_asked(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "d" / "e").mkdir(parents=True)
    with pytest.raises(data.DataConflict, match="--recursive"):
        data.remove(root, "d", recursive=False)
    assert data.remove(root, "d", recursive=True) == "dir"
    with pytest.raises(data.DataNotFound):
        data.remove(root, "d", recursive=False)
    with pytest.raises(data.DataConflict):
        data.remove(root, "", recursive=True)
