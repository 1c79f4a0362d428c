"""`clone_repository`: a git repository checked out once into `/data`, as fal's toolkit
has it, so every runner and every later cold start reuses the same checkout.

The clone is made in a temporary folder beside its final place and renamed into
place when complete (with `commit_hash` checked out and submodules updated), so a
crash never leaves a half-made checkout under the real name. Runners that start
together take turns on a lock in the target folder: one clones, the others find
the finished checkout.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tidal.toolkit.download import _turn
from tidal.toolkit.paths import repository_dir

MIN_COMMIT_PREFIX = 8
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}  # a private repository fails, never waits for a password


class CloneError(RuntimeError):
    """A repository that could not be cloned; the message names the URL and git's reason."""


def clone_repository(
    https_url: str,
    *,
    commit_hash: str | None = None,
    target_dir: str | os.PathLike[str] | None = None,
    repo_name: str | None = None,
    force: bool = False,
    include_to_path: bool = False,
) -> Path:
    """Clone `https_url` into `target_dir/repo_name` (default `/data/.tidal/repos/<name>`,
    with `-<commit prefix>` when `commit_hash` is given) and return that folder.

    An existing checkout is reused, unless `force`, when it is at `commit_hash` (or
    when no commit is asked for); otherwise it is replaced. `include_to_path` puts
    the checkout first on `sys.path`."""
    if commit_hash is not None and len(commit_hash) < MIN_COMMIT_PREFIX:
        raise ValueError(
            f"clone_repository: commit hash {commit_hash!r} is too short; "
            f"give at least {MIN_COMMIT_PREFIX} characters"
        )
    folder = Path(target_dir) if target_dir is not None else repository_dir()
    if repo_name is None:
        repo_name = Path(https_url.rstrip("/")).stem
        if commit_hash:
            repo_name += f"-{commit_hash[:MIN_COMMIT_PREFIX]}"
    if not repo_name or Path(repo_name).name != repo_name or repo_name in (".", ".."):
        raise ValueError(f"clone_repository: {repo_name!r} is not a folder name; pass repo_name=")
    checkout = folder / repo_name
    folder.mkdir(parents=True, exist_ok=True)
    with _turn(folder, f"clone:{repo_name}"):
        if force or not _usable(checkout, commit_hash):
            _clone(https_url, commit_hash, folder, checkout)
    if include_to_path and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    return checkout


def _usable(checkout: Path, commit_hash: str | None) -> bool:
    if not (checkout / ".git").exists():
        return False
    head = _rev_parse(checkout, "HEAD")
    if head is None:
        return False
    return commit_hash is None or _rev_parse(checkout, commit_hash) == head


def _clone(url: str, commit_hash: str | None, folder: Path, checkout: Path) -> None:
    print(f"tidal: cloning {url} into {checkout}", flush=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=f".{checkout.name}.clone-") as temp:
        work = Path(temp) / "repo"
        _git(url, "clone", "--recursive", "--", url, str(work))
        if commit_hash:
            _git(url, "checkout", "--quiet", commit_hash, cwd=work)
            _git(url, "submodule", "update", "--init", "--recursive", cwd=work)
        if checkout.exists():  # out of date or broken: moved aside, deleted with the temp
            os.replace(checkout, Path(temp) / "old")
        os.replace(work, checkout)


def _git(url: str, *args: str, cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True,
            env={**os.environ, **_GIT_ENV},
        )  # fmt: skip
    except FileNotFoundError:
        raise CloneError(
            f"clone_repository({url!r}): git is not installed where this runs; "
            "install it (apt-get install git, or add it to the app's image)"
        ) from None
    if done.returncode != 0:
        reason = " ".join(done.stderr.strip().splitlines()[-3:]) or f"exit status {done.returncode}"
        raise CloneError(f"clone_repository({url!r}): git {args[0]} failed: {reason}")


def _rev_parse(checkout: Path, ref: str) -> str | None:
    with contextlib.suppress(OSError):
        done = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            cwd=checkout, capture_output=True, text=True, env={**os.environ, **_GIT_ENV},
        )  # fmt: skip
        if done.returncode == 0:
            return done.stdout.strip()
    return None


__all__ = ["CloneError", "clone_repository"]
