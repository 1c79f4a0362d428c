"""fal's toolkit for handlers: `File` and `Image`, given and returned by URL."""

from __future__ import annotations

from tidal.toolkit.file import File, FileStoreError, RequestLike
from tidal.toolkit.image import Image

__all__ = ["File", "FileStoreError", "Image", "RequestLike"]
