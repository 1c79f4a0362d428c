"""tidal: a self-hostable serverless platform with fal's SDK surface."""

from tidal.sdk.function import Function, function
from tidal.sdk.image import ContainerImage
from tidal.spec import AppOptions, AppSpec, ImageSpec, InvalidOptionError

__version__ = "0.1.0"

__all__ = [
    "AppOptions",
    "AppSpec",
    "ContainerImage",
    "Function",
    "ImageSpec",
    "InvalidOptionError",
    "__version__",
    "function",
]
