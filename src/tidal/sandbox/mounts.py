"""The sandbox's filesystem as bubblewrap arguments (pure: the host is asked only
through the `traversable` function given).

The host's system is seen read-only; /tmp is private; DATA_DIR, and any folder
the sandbox's uid could not pass through anyway (such as /root), are replaced by
empty folders in which only what the runner needs is bound back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

Mode = Literal["ro", "rw", "dev"]
_BIND_FLAG: dict[Mode, str] = {"ro": "--ro-bind", "rw": "--bind", "dev": "--dev-bind"}


@dataclass(frozen=True)
class Bind:
    source: str
    target: str
    mode: Mode = "ro"


def _ancestors(path: PurePosixPath) -> list[PurePosixPath]:
    """/a/b/c -> [/a, /a/b] (the root and the path itself left out)."""
    return [PurePosixPath(*path.parts[: i + 1]) for i in range(1, len(path.parts) - 1)]


def _under(path: PurePosixPath, roots: Iterable[PurePosixPath]) -> PurePosixPath | None:
    for root in roots:
        if path == root or root in path.parents:
            return root
    return None


def bwrap_mounts(
    binds: Iterable[Bind], hidden: Iterable[str], traversable: Callable[[str], bool]
) -> list[str]:
    """Arguments for the sandbox's mounts. `hidden` folders are emptied;
    `traversable(folder)` says whether an unrelated uid may pass through it."""
    binds = list(binds)
    empty: set[PurePosixPath] = {PurePosixPath("/tmp"), *(PurePosixPath(h) for h in hidden)}
    for bind in binds:
        target = PurePosixPath(bind.target)
        if target.parts[:2] == ("/", "dev"):
            continue
        for folder in _ancestors(target):
            if not traversable(str(folder)):
                empty.add(folder)
                break
    # A folder inside another emptied one is empty already.
    roots = sorted((p for p in empty if _under(p, empty - {p}) is None), key=lambda p: len(p.parts))
    args = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for folder in roots:
        mode = "1777" if folder == PurePosixPath("/tmp") else "0755"
        args += ["--perms", mode, "--tmpfs", str(folder)]
    made: set[PurePosixPath] = set(roots)
    for bind in sorted(binds, key=lambda b: len(PurePosixPath(b.target).parts)):
        target = PurePosixPath(bind.target)
        root = _under(target, roots)
        if root is None and bind.mode == "ro" and bind.source == bind.target:
            continue  # the host's read-only view shows it already
        if root is not None:
            for folder in _ancestors(target):
                if root in folder.parents and folder not in made:
                    args += ["--perms", "0755", "--dir", str(folder)]
                    made.add(folder)
        args += [_BIND_FLAG[bind.mode], bind.source, bind.target]
        made.add(target)
    return args
