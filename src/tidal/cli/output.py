"""Where commands print: rich consoles made on first use (`tidal version` needs none)."""

from __future__ import annotations

import json
import os
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


@cache
def out() -> Console:
    from rich.console import Console

    # Not on a terminal (a pipe, a file, a test): tables as wide as their content.
    return Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=1000)


@cache
def err() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def print_json(data: Any) -> None:
    """A command's `--json` answer, for scripts: indented, keys sorted."""
    print(json.dumps(data, indent=2, sort_keys=True))
