"""fal's toolkit for handlers: `File` and `Image`, given and returned by URL, and
downloads into /data (`download_file`, `download_model_weights`)."""

from __future__ import annotations

from tidal.toolkit.download import DownloadError, download_file, download_model_weights
from tidal.toolkit.file import File, FileStoreError, RequestLike
from tidal.toolkit.image import Image

__all__ = [
    "DownloadError",
    "File",
    "FileStoreError",
    "Image",
    "RequestLike",
    "download_file",
    "download_model_weights",
]
