"""fal's toolkit for handlers: `File`, `Image`, `Audio` and `Video`, given and
returned by URL; downloads and git clones into /data (`download_file`,
`download_model_weights`, `clone_repository`); the persistent folders
(`tidal.toolkit.paths`); image sizes and the safety checker's interface."""

from __future__ import annotations

from tidal.toolkit.clone import CloneError, clone_repository
from tidal.toolkit.download import DownloadError, download_file, download_model_weights
from tidal.toolkit.file import File, FileStoreError, RequestLike
from tidal.toolkit.image import Image, ImageSize, ImageSizeInput, get_image_size
from tidal.toolkit.media import Audio, Video
from tidal.toolkit.stores import FileData, FileRepository, InMemoryRepository

__all__ = [
    "Audio",
    "CloneError",
    "DownloadError",
    "File",
    "FileData",
    "FileRepository",
    "FileStoreError",
    "Image",
    "ImageSize",
    "ImageSizeInput",
    "InMemoryRepository",
    "RequestLike",
    "Video",
    "clone_repository",
    "download_file",
    "download_model_weights",
    "get_image_size",
]
