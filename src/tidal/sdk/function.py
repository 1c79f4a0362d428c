from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

if TYPE_CHECKING:
    from tidal.sdk.remote import RemoteCall
    from tidal.spec import AppOptions

P = ParamSpec("P")
R = TypeVar("R")

# fal's defaults for `function` where they differ from the options' own.
FUNCTION_DEFAULTS: dict[str, Any] = {"keep_alive": 10, "machine_type": "XS"}


def _in_runner() -> bool:
    # Inside a runner the platform validated these options at deploy time; not
    # importing pydantic again there takes ~100 ms off every cold start.
    return "TIDAL_RUNNER_ID" in os.environ


class Function(Generic[P, R]):
    """A function decorated with `tidal.function`: its options and the body to run.

    A plain function (no `exposed_port`), called outside a runner, runs on a runner
    of the platform (`tidal.sdk.remote`): deployed, or reused when its code is
    unchanged. `local(...)` runs the body here; a server function's call always does.
    """

    def __init__(self, func: Callable[P, R], raw_options: dict[str, Any]) -> None:
        self.func = func
        self.raw_options = raw_options  # as written, with setup_function by name
        self._options: AppOptions | None = None
        functools.update_wrapper(self, func)

    @property
    def options(self) -> AppOptions:
        if self._options is None:
            from tidal.spec import build_options

            self._options = build_options(self.raw_options, defaults=FUNCTION_DEFAULTS)
        return self._options

    def is_plain(self) -> bool:
        """fal's original kind of function: called with arguments, returns a value."""
        return self.raw_options.get("exposed_port") is None and not self.raw_options.get("serve")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.is_plain() and not _in_runner():
            from tidal.sdk.remote import call

            return call(self, args, kwargs)
        return self.func(*args, **kwargs)

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the body in this process."""
        return self.func(*args, **kwargs)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> RemoteCall[R]:
        """Queue a call on a runner and return at once; `.result()` waits for it."""
        from tidal.sdk.remote import submit

        return submit(self, args, kwargs)


def function(**options: Any) -> Callable[[Callable[P, R]], Function[P, R]]:
    """Declare a deployable function with fal's options.

    With `exposed_port`, the body starts a server on that port (direct server
    mode) and the gateway forwards traffic to it unmodified.
    """
    setup = options.get("setup_function")
    if callable(setup):
        options = {**options, "setup_function": setup.__name__}

    validated: AppOptions | None = None
    if not _in_runner():  # errors belong at definition time
        from tidal.spec import build_options

        validated = build_options(options, defaults=FUNCTION_DEFAULTS)

    def decorate(func: Callable[P, R]) -> Function[P, R]:
        if not callable(func):
            from tidal.spec import InvalidOptionError

            raise InvalidOptionError("tidal.function must decorate a function")
        fn = Function(func, options)
        fn._options = validated
        return fn

    return decorate
