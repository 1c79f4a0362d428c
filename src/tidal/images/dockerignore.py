"""`.dockerignore` patterns (Docker's rules): which files of a build context are left out.

A pattern is matched against the path relative to the context's root, with `/`
separators: `*` and `?` do not cross a `/`, `**` matches any number of folders,
a leading `/` is dropped, and a pattern matching a folder leaves out everything
in it. `!pattern` puts back what an earlier pattern left out; the last pattern
that matches a path decides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path


def _regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            if pattern.startswith("/", i):
                out[-1] = "(?:.*/)?"
                i += 1
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    # A pattern naming a folder also covers what is inside it.
    return re.compile("".join(out) + "(?:/.*)?")


class DockerIgnore:
    def __init__(self, patterns: Sequence[str]) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in patterns:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            keep = line.startswith("!")
            line = line.removeprefix("!").strip().lstrip("/").rstrip("/")
            line = re.sub(r"/+", "/", line).removeprefix("./")
            if line:
                self.rules.append((keep, _regex(line)))

    def ignored(self, relative: str) -> bool:
        """Whether the path (relative to the context, `/`-separated) is left out."""
        decision = False
        for keep, rule in self.rules:
            if rule.fullmatch(relative):
                decision = not keep
        return decision


def read_patterns(context: Path, given: Sequence[str] | None) -> list[str]:
    """The patterns given, else the context's own .dockerignore, else none."""
    if given is not None:
        return list(given)
    path = context / ".dockerignore"
    return path.read_text().splitlines() if path.is_file() else []
