"""Docker's .dockerignore rules (tidal.images.dockerignore)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidal.images.dockerignore import DockerIgnore, read_patterns


def test_docker_rules() -> None:
    ignore = DockerIgnore(["# comment", "*.pyc", "/build", "data/", "**/*.secret",
                           "!keep/*.secret", "docs/**/draft?.md"])  # fmt: skip
    assert ignore.ignored("a.pyc") and not ignore.ignored("pkg/a.pyc")  # * stops at /
    assert ignore.ignored("build") and ignore.ignored("build/out/x.o")  # a folder: all in it
    assert ignore.ignored("data/big.bin") and not ignore.ignored("mydata/x")
    assert ignore.ignored("a.secret") and ignore.ignored("deep/down/b.secret")
    assert not ignore.ignored("keep/c.secret")  # put back by the later ! pattern
    assert ignore.ignored("docs/x/y/draft1.md") and ignore.ignored("docs/draft2.md")
    assert not ignore.ignored("docs/final.md") and not ignore.ignored("src/app.py")
    assert not DockerIgnore([]).ignored("anything")


def test_patterns_given_or_from_the_folder(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("*.log\n")
    assert read_patterns(tmp_path, None) == ["*.log"]
    assert read_patterns(tmp_path, ["x"]) == ["x"]
    assert read_patterns(tmp_path / "missing", None) == []


def test_from_dockerfile_str_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tidal.sdk.image import ContainerImage

    monkeypatch.delenv("TIDAL_RUNNER_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    plain = ContainerImage.from_dockerfile_str("FROM x\nRUN true\n")
    assert plain.context_dir is None  # nothing to copy: no context shipped
    copies = ContainerImage.from_dockerfile_str("FROM x\nCOPY app /app\n")
    assert copies.context_dir == str(tmp_path)  # fal's default: the current folder
    (tmp_path / "ignore.txt").write_text("*.log\n")
    given = ContainerImage.from_dockerfile_str(
        "FROM x\n", context_dir=tmp_path, dockerignore_path=tmp_path / "ignore.txt"
    )
    assert given.dockerignore == ["*.log"]
    with pytest.raises(ValueError, match="is not a folder"):
        ContainerImage.from_dockerfile_str("FROM x\n", context_dir=tmp_path / "nope")
