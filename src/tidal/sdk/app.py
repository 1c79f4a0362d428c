"""`tidal.App`: a class with typed endpoints that wraps a server (proxy app mode).

As fal's `App`: scaling options as class keywords or class attributes, infra
options as class attributes, `setup()` before the runner is ready,
`teardown()` on graceful stop, `@endpoint(path)` methods with pydantic models.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from tidal.sdk.function import _in_runner

if TYPE_CHECKING:
    from tidal.spec import AppOptions

F = TypeVar("F", bound=Callable[..., Any])

# fal's defaults for App where they differ from `function`'s.
APP_DEFAULTS: dict[str, Any] = {"keep_alive": 60, "machine_type": "S"}
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
# fal's App kinds: accepted, and ignored (on tidal `image=` is what selects a container).
KINDS = ("virtualenv", "container")
# fal's own scheduling internals, meaningless on tidal: accepted with a warning.
IGNORED_FAL_OPTIONS = ("_scheduler", "_scheduler_options", "resolver")


@dataclass(frozen=True)
class HealthCheck:
    """fal's health check: the platform calls the endpoint; a runner failing it
    `failure_threshold` times after `start_period_seconds` is replaced."""

    start_period_seconds: int = 30
    timeout_seconds: int = 5
    failure_threshold: int = 3
    call_regularly: bool = True


@dataclass(frozen=True)
class EndpointSpec:
    path: str
    method: str = "POST"
    is_websocket: bool = False
    health_check: HealthCheck | None = None


def endpoint(
    path: str,
    *,
    is_websocket: bool = False,
    health_check: HealthCheck | None = None,
    method: str = "POST",
) -> Callable[[F], F]:
    """Expose an App method at `path` (POST, as on fal, unless `method` says otherwise)."""
    if not path.startswith("/"):
        raise ValueError(f"endpoint path {path!r} must start with '/'")
    if method.upper() not in METHODS:
        raise ValueError(f"endpoint method {method!r}: use one of {', '.join(sorted(METHODS))}")

    def mark(fn: F) -> F:
        fn._tidal_endpoint = EndpointSpec(path, method.upper(), is_websocket, health_check)  # type: ignore[attr-defined]
        return fn

    return mark


class App:
    """Subclass it: `class MyApp(tidal.App, keep_alive=300, max_concurrency=1): ...`"""

    app_name: ClassVar[str | None] = None
    _tidal_raw_options: ClassVar[dict[str, Any]] = {}
    _tidal_options: ClassVar[AppOptions | None] = None

    def __init_subclass__(cls, name: str | None = None, **options: Any) -> None:
        super().__init_subclass__()
        if name is not None:
            cls.app_name = name
        if _in_runner():
            # Validated at deploy; a runner needs neither the options nor the models
            # that check them (tidal.spec: pydantic models, ~80 ms of every cold start).
            return
        from tidal.spec import OPTION_NAMES, InvalidOptionError

        options = _fal_host_options(cls, options)
        if "__init__" in cls.__dict__:
            raise InvalidOptionError(
                f"{cls.__name__} overrides __init__, which tidal (like fal) does not allow: "
                "put one-time work in setup(), which runs once per runner"
            )
        unknown = sorted(set(options) - OPTION_NAMES)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(OPTION_NAMES), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InvalidOptionError(f"unknown option {unknown[0]!r} on {cls.__name__}.{hint}")
        raw = dict(cls._tidal_raw_options)  # inherited from a parent App
        raw.update({k: v for k, v in cls.__dict__.items() if k in OPTION_NAMES})
        raw.update(options)
        cls._tidal_raw_options = raw
        health = [e for _, e in endpoints(cls) if e.health_check is not None]
        if len(health) > 1:
            raise InvalidOptionError(
                f"{cls.__name__} has {len(health)} health checks; fal allows one"
            )
        cls._tidal_options = None
        cls.options()  # errors belong at definition time

    @classmethod
    def options(cls) -> AppOptions:
        if cls._tidal_options is None:
            from tidal.spec import build_options

            cls._tidal_options = build_options(cls._tidal_raw_options, defaults=APP_DEFAULTS)
        return cls._tidal_options

    def setup(self) -> Any:
        """Runs once per runner before it takes requests (may be async)."""

    def teardown(self) -> Any:
        """Runs when the runner stops gracefully (may be async)."""


def _fal_host_options(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """Take out the class keywords fal has and tidal does not need: `kind` (checked,
    then ignored) and fal's scheduler internals (ignored with a warning)."""
    from tidal.spec import InvalidOptionError

    options = dict(options)
    kind = options.pop("kind", cls.__dict__.get("kind"))
    if kind is not None and kind not in KINDS:
        raise InvalidOptionError(
            f"{cls.__name__}: kind={kind!r} is not supported by tidal: use "
            f"{' or '.join(repr(k) for k in KINDS)} (tidal ignores it; `image=` selects a container)"
        )
    for name in IGNORED_FAL_OPTIONS:
        if name in options or name in cls.__dict__:
            options.pop(name, None)
            warnings.warn(
                f"{cls.__name__}: tidal ignores {name} (fal's own scheduler settings); "
                "remove it to silence this warning",
                stacklevel=4,
            )
    return options


def wrap_app(cls: type[App], **options: Any) -> type[App]:
    """fal's `wrap_app(AppClass, **options)`: the app, ready to deploy by the name it is
    assigned to (`app = wrap_app(MyApp)`, then `tidal deploy file.py::app`)."""
    if not (isinstance(cls, type) and issubclass(cls, App)):
        raise TypeError(f"wrap_app takes an App subclass, not {cls!r}")
    if not options:
        return cls
    return type(cls.__name__, (cls,), {"__module__": cls.__module__}, **options)


def endpoints(cls: type) -> list[tuple[str, EndpointSpec]]:
    """(attribute name, spec) of every endpoint method, the subclass's winning."""
    found: dict[str, EndpointSpec] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            spec = getattr(value, "_tidal_endpoint", None)
            if isinstance(spec, EndpointSpec) and inspect.isfunction(value):
                found[attr] = spec
    return list(found.items())
