from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


def load_module(root: Path, file_name: str) -> ModuleType:
    """Import `root/file_name` as a module; `root` becomes importable, so the user's
    sibling modules import as they do on their own machine."""
    path = root / file_name
    sys.path.insert(0, str(root))
    module_name = path.stem if path.stem not in sys.modules else f"tidal_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {file_name} from {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_entry(root: Path, entry: str) -> tuple[ModuleType, Any]:
    """Import `file.py::name` and return (module, the named object)."""
    file_name, _, obj_name = entry.partition("::")
    module = load_module(root, file_name)
    try:
        return module, getattr(module, obj_name)
    except AttributeError:
        raise ImportError(f"{file_name} defines no {obj_name!r}") from None
