"""`cached`: a function's results kept in memory for the life of the runner, as fal's
`@fal.cached` (typically a model loaded once and shared by every request)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

P = ParamSpec("P")
R = TypeVar("R")


def cached(func: Callable[P, R]) -> Callable[P, R]:
    """Call `func` once per distinct arguments (which must be hashable); later calls
    with the same arguments return the first result."""
    return cast("Callable[P, R]", functools.cache(func))
