"""Where the platform keeps bytes: the file store that `tidal.toolkit.File` writes into."""

from __future__ import annotations

from tidal.storage.files import (
    FILES_DIR_ENV,
    PUBLIC_URL_ENV,
    FileServer,
    files_dir,
    public_url,
    runner_env,
)

__all__ = [
    "FILES_DIR_ENV",
    "PUBLIC_URL_ENV",
    "FileServer",
    "files_dir",
    "public_url",
    "runner_env",
]
