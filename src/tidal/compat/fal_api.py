"""What the stand-in `fal` package is made of: its names, `fal.function`, and the
errors for everything else. Standard library only at import time, so that a
runner importing `fal` does not import pydantic before the user's code does."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

    from tidal.sdk.function import Function

P = ParamSpec("P")
R = TypeVar("R")

# Every supported name: the fal name, and where tidal keeps the object ("module:attribute").
SUPPORTED: dict[str, str] = {
    "fal.App": "tidal.sdk.app:App",
    "fal.function": "tidal.compat.fal_api:function",
    "fal.endpoint": "tidal.sdk.app:endpoint",
    "fal.HealthCheck": "tidal.sdk.app:HealthCheck",
    "fal.ContainerImage": "tidal.sdk.image:ContainerImage",
    "fal.cached": "tidal.sdk.cached:cached",
    "fal.wrap_app": "tidal.sdk.app:wrap_app",
    "fal.realtime": "tidal.sdk.realtime:realtime",
    "fal.container.ContainerImage": "tidal.sdk.image:ContainerImage",
    "fal.distributed.DistributedRunner": "tidal.distributed.runner:DistributedRunner",
    "fal.distributed.DistributedWorker": "tidal.distributed.worker:DistributedWorker",
    **{
        f"fal.exceptions.{name}": f"tidal.sdk.exceptions:{name}"
        for name in (
            "AppException",
            "FieldException",
            "RequestCancelledException",
            "FileTooLargeError",
            "GPUException",
            "GPUOutOfMemoryException",
            "CUDAOutOfMemoryException",
        )
    },
    "fal.exceptions.FalServerlessException": "tidal.sdk.exceptions:ServerlessException",
    "fal.toolkit.File": "tidal.toolkit.file:File",
    "fal.toolkit.Image": "tidal.toolkit.image:Image",
    "fal.toolkit.ImageSizeInput": "tidal.toolkit.image:ImageSizeInput",
    "fal.toolkit.get_image_size": "tidal.toolkit.image:get_image_size",
    "fal.toolkit.Audio": "tidal.toolkit.media:Audio",
    "fal.toolkit.Video": "tidal.toolkit.media:Video",
    "fal.toolkit.download_file": "tidal.toolkit.download:download_file",
    "fal.toolkit.download_model_weights": "tidal.toolkit.download:download_model_weights",
    "fal.toolkit.DownloadError": "tidal.toolkit.download:DownloadError",
    "fal.toolkit.clone_repository": "tidal.toolkit.clone:clone_repository",
    "fal.toolkit.FAL_PERSISTENT_DIR": "tidal.toolkit.paths:PERSISTENT_DIR",
    "fal.toolkit.FAL_MODEL_WEIGHTS_DIR": "tidal.toolkit.paths:MODEL_WEIGHTS_DIR",
    "fal.toolkit.FAL_REPOSITORY_DIR": "tidal.toolkit.paths:REPOSITORY_DIR",
    "fal.toolkit.audio.Audio": "tidal.toolkit.media:Audio",
    "fal.toolkit.video.Video": "tidal.toolkit.media:Video",
    "fal.toolkit.file.File": "tidal.toolkit.file:File",
    "fal.toolkit.file.types.File": "tidal.toolkit.file:File",
    "fal.toolkit.file.types.FileData": "tidal.toolkit.stores:FileData",
    "fal.toolkit.file.types.FileRepository": "tidal.toolkit.stores:FileRepository",
    "fal.toolkit.file.providers.fal.InMemoryRepository": "tidal.toolkit.stores:InMemoryRepository",
    **{
        f"fal.toolkit.file.providers.fal.{name}": "tidal.toolkit.stores:PlatformStore"
        for name in (
            "FalFileRepository",
            "FalFileRepositoryV2",
            "FalFileRepositoryV3",
            "FalCDNFileRepository",
        )
    },
    "fal.toolkit.image.Image": "tidal.toolkit.image:Image",
    "fal.toolkit.image.ImageSize": "tidal.toolkit.image:ImageSize",
    "fal.toolkit.image.ImageSizeInput": "tidal.toolkit.image:ImageSizeInput",
    "fal.toolkit.image.IMAGE_SIZE_PRESETS": "tidal.toolkit.image:IMAGE_SIZE_PRESETS",
    "fal.toolkit.image.get_image_size": "tidal.toolkit.image:get_image_size",
    "fal.toolkit.image.filter_by": "tidal.toolkit.safety:filter_by",
    **{
        f"fal.toolkit.image.safety_checker.{name}": f"tidal.toolkit.safety:{name}"
        for name in (
            "postprocess_images",
            "run_safety_checker",
            "run_safety_checker_v2",
            "filter_by",
        )
    },
    **{
        f"fal.toolkit.utils{sub}.{name}": f"tidal.toolkit.{where}"
        for sub in ("", ".download_utils")
        for name, where in (
            ("download_file", "download:download_file"),
            ("download_model_weights", "download:download_model_weights"),
            ("DownloadError", "download:DownloadError"),
            ("clone_repository", "clone:clone_repository"),
            ("FAL_PERSISTENT_DIR", "paths:PERSISTENT_DIR"),
            ("FAL_MODEL_WEIGHTS_DIR", "paths:MODEL_WEIGHTS_DIR"),
            ("FAL_REPOSITORY_DIR", "paths:REPOSITORY_DIR"),
        )
    },
}

FUNCTION_KINDS = ("virtualenv", "container")


class FalCompatError(ImportError):
    """`from fal... import NAME` of a name that tidal's fal compatibility layer lacks."""


def unsupported_message(name: str) -> str:
    module = name.rpartition(".")[0]
    here = [full for full in SUPPORTED if full.rpartition(".")[0] == module]
    listed = f"supported in {module}: {', '.join(here)}" if here else "see docs/fal-compat.md"
    return f"{name} is not supported by tidal's fal compatibility layer; {listed}"


def _unsupported(name: str, importing: bool) -> NoReturn:
    if importing:
        raise FalCompatError(unsupported_message(name), name=name)
    raise AttributeError(unsupported_message(name))


def _from_import() -> bool:
    """Whether `from PACKAGE import NAME` is asking (importlib's `_handle_fromlist`
    probes with hasattr, and would replace an AttributeError with its own
    'cannot import name' message, losing ours)."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(3):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name == "_handle_fromlist" and "importlib" in code.co_filename:
            return True
        frame = frame.f_back
    return False


def module_getattr(module: str, submodules: Sequence[str] = ()) -> Callable[[str], Any]:
    """A module-level `__getattr__` for the shim module `module` (e.g. "fal.toolkit"):
    supported names load on first use; submodules import; anything else fails clearly."""
    exports: Mapping[str, str] = {
        full.removeprefix(module + "."): where
        for full, where in SUPPORTED.items()
        if full.rpartition(".")[0] == module
    }

    def __getattr__(name: str) -> Any:
        target = sys.modules[module]
        if name in exports:
            owner, _, attr = exports[name].partition(":")
            value = getattr(importlib.import_module(owner), attr)
            setattr(target, name, value)
            return value
        if name in submodules:
            return importlib.import_module(f"{module}.{name}")
        if name.startswith("_"):  # dunder probes (__wrapped__, __version__...) stay quiet
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        _unsupported(f"{module}.{name}", _from_import())

    return __getattr__


def module_all(module: str) -> list[str]:
    """The supported names of shim module `module`, for its `__all__`."""
    return sorted(
        full.removeprefix(module + ".") for full in SUPPORTED if full.rpartition(".")[0] == module
    )


def module_dir(module: str, submodules: Sequence[str] = ()) -> Callable[[], list[str]]:
    names = [
        full.removeprefix(module + ".") for full in SUPPORTED if full.rpartition(".")[0] == module
    ]
    return lambda: sorted([*names, *submodules])


def function(
    kind: str = "virtualenv", **options: Any
) -> Callable[[Callable[P, R]], Function[P, R]]:
    """fal's `function(kind="virtualenv", **config)`: the kind is accepted and ignored
    (on tidal `image=` selects a container); the options are `tidal.function`'s."""
    if callable(kind):
        raise TypeError(
            "fal.function needs parentheses: write @fal.function(...) "
            "(with no options, @fal.function())"
        )
    if kind not in FUNCTION_KINDS:
        from tidal.spec import InvalidOptionError

        raise InvalidOptionError(
            f"fal.function kind {kind!r} is not supported by tidal: use "
            f"{' or '.join(repr(k) for k in FUNCTION_KINDS)} (tidal ignores it; "
            "`image=` selects a container)"
        )
    from tidal.sdk.function import function as tidal_function

    return tidal_function(**options)


class UnsupportedFalModules:
    """Last on `sys.meta_path`: `import fal.x` of a module the shim lacks fails
    naming what is supported, instead of a bare 'No module named'. (A plain class:
    `importlib.abc` would cost a runner's cold start ~10 ms of imports.)"""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        parent = sys.modules.get("fal")
        if not fullname.startswith("fal.") or not getattr(parent, "__tidal_shim__", False):
            return None
        if fullname.rpartition(".")[2].startswith("_"):
            return None
        raise ModuleNotFoundError(unsupported_message(fullname), name=fullname)
