"""Run code written for fal on tidal, unchanged: a stand-in `fal` package.

When the real `fal` package is not installed, `install_fal_shim()` makes
`import fal` find a small package of tidal's own (`tidal/compat/shim/fal/`)
whose names are tidal's objects. A real `fal` is never shadowed: the shim is
only added when `importlib.util.find_spec("fal")` finds nothing, and it is
appended to the end of `sys.path`.

The names it has, and what each is on tidal, are `tidal.compat.fal_api.SUPPORTED`
(documented, with their differences, in docs/fal-compat.md). Any other name fails
saying "fal.X is not supported by tidal's fal compatibility layer; supported in
fal.Y: ...": `fal.sync_dir` raises AttributeError (so `hasattr` is False), `from
fal import sync_dir` raises `FalCompatError` (an ImportError), and a module the
shim lacks (`import fal.toolkit.kv`) raises ModuleNotFoundError.

Only the process that calls `install_fal_shim()` sees the shim: it does not
touch `PYTHONPATH`, so that a child process running another interpreter (one
that may have the real fal) is never given tidal's stand-in.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from tidal.compat.fal_api import (
    SUPPORTED,
    FalCompatError,
    UnsupportedFalModules,
    unsupported_message,
)

SHIM_DIR = Path(__file__).resolve().parent / "shim"

__all__ = [
    "SHIM_DIR",
    "SUPPORTED",
    "FalCompatError",
    "install_fal_shim",
    "real_fal_installed",
    "unsupported_message",
]


def real_fal_installed() -> bool:
    """Whether `import fal` finds a package other than tidal's stand-in."""
    loaded = sys.modules.get("fal")
    if loaded is not None:
        return not getattr(loaded, "__tidal_shim__", False)
    shim = str(SHIM_DIR)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if p != shim]
    try:
        return importlib.util.find_spec("fal") is not None
    except (ImportError, ValueError):  # a broken `fal` is still not ours to replace
        return True
    finally:
        sys.path[:] = saved


def install_fal_shim() -> bool:
    """Make `import fal` resolve to tidal's stand-in, unless a real `fal` is installed.

    Returns whether the shim is in place (True also when it already was).
    Call it before importing a user's file that may `import fal`.
    """
    if real_fal_installed():
        return False
    shim = str(SHIM_DIR)
    if shim not in sys.path:
        sys.path.append(shim)
        importlib.invalidate_caches()
    if not any(isinstance(f, UnsupportedFalModules) for f in sys.meta_path):
        sys.meta_path.append(UnsupportedFalModules())
    return True
