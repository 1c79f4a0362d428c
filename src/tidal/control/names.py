"""The one rule for app names, shared by the CLI and the control API.

A name is part of URLs (`/{owner}/{app}/...`), of paths on disk (runner logs, under
`<data>/logs/<owner>/<app>/`) and of container names, so it is kept to what is safe in
all three: a letter or digit first, then letters, digits, '-' and '_', 63 at most.
"""

from __future__ import annotations

import re

APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


def app_name_problem(name: str) -> str | None:
    """Why `name` cannot name an app, or None."""
    if APP_NAME.fullmatch(name):
        return None
    return (
        f"{name!r} is not a valid app name: use letters, digits, '-' and '_' (up to 63), "
        "starting with a letter or digit"
    )
