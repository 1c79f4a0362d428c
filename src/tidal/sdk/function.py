from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

from tidal.spec import AppOptions, InvalidOptionError, build_options

P = ParamSpec("P")
R = TypeVar("R")

# fal's defaults for `function` where they differ from the options' own.
FUNCTION_DEFAULTS: dict[str, Any] = {"keep_alive": 10, "machine_type": "XS"}


class Function(Generic[P, R]):
    """A function decorated with `tidal.function`: its options and the body to run.

    Calling it locally runs the body in this process.
    """

    def __init__(self, func: Callable[P, R], options: AppOptions) -> None:
        self.func = func
        self.options = options
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)


def function(**options: Any) -> Callable[[Callable[P, R]], Function[P, R]]:
    """Declare a deployable function with fal's options.

    With `exposed_port`, the body starts a server on that port (direct server
    mode) and the gateway forwards traffic to it unmodified.
    """
    setup = options.get("setup_function")
    if callable(setup):
        options = {**options, "setup_function": setup.__name__}
    validated = build_options(options, defaults=FUNCTION_DEFAULTS)

    def decorate(func: Callable[P, R]) -> Function[P, R]:
        if not callable(func):
            raise InvalidOptionError("tidal.function must decorate a function")
        return Function(func, validated)

    return decorate
