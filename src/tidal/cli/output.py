"""Where commands print: rich consoles made on first use (`tidal version` needs none)."""

from __future__ import annotations

import os
import sys
from functools import cache
from typing import TYPE_CHECKING

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
