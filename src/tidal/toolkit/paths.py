"""Where runners keep what outlives them: the persistent `/data` folder, shared by
every runner of every app, and the folders the toolkit keeps in it.

`PERSISTENT_DIR`, `MODEL_WEIGHTS_DIR` and `REPOSITORY_DIR` (fal's `FAL_PERSISTENT_DIR`,
`FAL_MODEL_WEIGHTS_DIR`, `FAL_REPOSITORY_DIR`) are read when first asked for, so
that inside a runner they follow `TIDAL_DATA_DIR` where `/data` could not be
mounted, and on the deploy machine importing them touches nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

# Under the persistent folder; fal keeps the same things under `.fal/`.
MODEL_WEIGHTS_SUBDIR = Path(".tidal") / "model_weights"
REPOSITORY_SUBDIR = Path(".tidal") / "repos"


def data_dir() -> Path:
    """The persistent folder runners share: /data in a runner (TIDAL_DATA_DIR where
    /data could not be mounted)."""
    return Path(os.environ.get("TIDAL_DATA_DIR") or "/data")


def model_weights_dir() -> Path:
    return data_dir() / MODEL_WEIGHTS_SUBDIR


def repository_dir() -> Path:
    return data_dir() / REPOSITORY_SUBDIR


_CONSTANTS = {
    "PERSISTENT_DIR": data_dir,
    "MODEL_WEIGHTS_DIR": model_weights_dir,
    "REPOSITORY_DIR": repository_dir,
}


def __getattr__(name: str) -> Path:
    if name in _CONSTANTS:
        return _CONSTANTS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
