"""tidal: a self-hostable serverless platform with fal's SDK surface.

Names load on first use, so that `python -m tidal.runtime` starts a runner
without importing pydantic before the user's own code does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidal.sdk.app import App, HealthCheck, endpoint, wrap_app
    from tidal.sdk.cached import cached
    from tidal.sdk.exceptions import AppException, FieldException
    from tidal.sdk.function import Function, function
    from tidal.sdk.image import ContainerImage
    from tidal.sdk.image_app import ImageApp
    from tidal.sdk.realtime import realtime
    from tidal.spec import AppOptions, AppSpec, ImageSpec, InvalidOptionError

__version__ = "0.1.0"

_WHERE = {
    "App": "tidal.sdk.app",
    "HealthCheck": "tidal.sdk.app",
    "endpoint": "tidal.sdk.app",
    "wrap_app": "tidal.sdk.app",
    "cached": "tidal.sdk.cached",
    "realtime": "tidal.sdk.realtime",
    "AppException": "tidal.sdk.exceptions",
    "FieldException": "tidal.sdk.exceptions",
    "AppOptions": "tidal.spec",
    "AppSpec": "tidal.spec",
    "ContainerImage": "tidal.sdk.image",
    "Function": "tidal.sdk.function",
    "ImageApp": "tidal.sdk.image_app",
    "ImageSpec": "tidal.spec",
    "InvalidOptionError": "tidal.spec",
    "function": "tidal.sdk.function",
}

__all__ = [
    "App",
    "AppException",
    "AppOptions",
    "AppSpec",
    "ContainerImage",
    "FieldException",
    "Function",
    "HealthCheck",
    "ImageApp",
    "ImageSpec",
    "InvalidOptionError",
    "__version__",
    "cached",
    "endpoint",
    "function",
    "realtime",
    "wrap_app",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tidal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
