"""`Image`: a `File` that also says its width and height (fal's toolkit).

PNG, JPEG and GIF sizes are read from their headers here; other formats need
Pillow, when it is installed (tidal does not depend on it).
"""

from __future__ import annotations

import importlib
import io
import os
import struct
from pathlib import Path
from typing import IO, Any, Literal, Self

from pydantic import BaseModel, Field

from tidal.toolkit.file import File, RequestLike
from tidal.toolkit.stores import DEFAULT_REPOSITORY, FALLBACK_REPOSITORY, RepositoryRef

_PNG = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers (baseline, progressive, lossless, arithmetic...): they carry the size.
_JPEG_SOF = frozenset(
    {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)}
)
_JPEG_NO_LENGTH = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
_JPEG_MAX_SEGMENTS = 10_000
_FORMATS = {"jpg": "jpeg", "tif": "tiff"}


ImageSizePreset = Literal[
    "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"
]


class ImageSize(BaseModel):
    """A requested image size (fal's `ImageSize`)."""

    width: int = Field(default=512, description="The width of the generated image.", gt=0,
                       le=14142)  # fmt: skip
    height: int = Field(default=512, description="The height of the generated image.", gt=0,
                        le=14142)  # fmt: skip


IMAGE_SIZE_PRESETS: dict[str, ImageSize] = {
    "square_hd": ImageSize(width=1024, height=1024),
    "square": ImageSize(width=512, height=512),
    "portrait_4_3": ImageSize(width=768, height=1024),
    "portrait_16_9": ImageSize(width=576, height=1024),
    "landscape_4_3": ImageSize(width=1024, height=768),
    "landscape_16_9": ImageSize(width=1024, height=576),
}

ImageSizeInput = ImageSize | ImageSizePreset


def get_image_size(source: ImageSizeInput) -> ImageSize:
    """An `ImageSize` as given, or a preset's ("square_hd", "landscape_16_9", ...)."""
    if isinstance(source, ImageSize):
        return source
    if isinstance(source, str) and source in IMAGE_SIZE_PRESETS:
        return IMAGE_SIZE_PRESETS[source]
    raise TypeError(
        f"not an image size: {source!r}; give an ImageSize or one of {', '.join(IMAGE_SIZE_PRESETS)}"
    )


class Image(File):
    """An image file: `{url, content_type, file_name, file_size, width, height}`."""

    width: int | None = Field(default=None, description="The width of the image in pixels.",
                              examples=[1024])  # fmt: skip
    height: int | None = Field(default=None, description="The height of the image in pixels.",
                               examples=[1024])  # fmt: skip

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        content_type: str | None = None,
        repository: RepositoryRef = DEFAULT_REPOSITORY,
        multipart: bool | None = None,
        fallback_repository: RepositoryRef | list[RepositoryRef] | None = FALLBACK_REPOSITORY,
        request: RequestLike | None = None,
        save_kwargs: dict[str, Any] | None = None,
        fallback_save_kwargs: dict[str, Any] | None = None,
        file_name: str | None = None,
    ) -> Self:
        return super().from_path(
            path, _image_type(content_type), repository, multipart, fallback_repository,
            request, save_kwargs, fallback_save_kwargs, file_name,
        )  # fmt: skip

    @classmethod
    def from_bytes(  # type: ignore[override]  # fal's order: format, then size
        cls,
        data: bytes,
        format: str | None = None,
        size: ImageSize | None = None,
        file_name: str | None = None,
        repository: RepositoryRef = DEFAULT_REPOSITORY,
        fallback_repository: RepositoryRef | list[RepositoryRef] | None = FALLBACK_REPOSITORY,
        request: RequestLike | None = None,
        save_kwargs: dict[str, Any] | None = None,
        fallback_save_kwargs: dict[str, Any] | None = None,
    ) -> Self:
        """As `File.from_bytes`; `format` is a bare format (fal's `Image.from_bytes(data,
        "png")`) or a content type. Width and height are read from the bytes (or `size`)."""
        image = super().from_bytes(
            data, _image_type(format), file_name, repository, fallback_repository, request,
            save_kwargs, fallback_save_kwargs,
        )  # fmt: skip
        if size is not None:
            image.width, image.height = size.width, size.height
        return image

    @classmethod
    def from_pil(
        cls,
        pil_image: Any,
        format: str | None = None,
        file_name: str | None = None,
        repository: RepositoryRef = DEFAULT_REPOSITORY,
        fallback_repository: RepositoryRef | list[RepositoryRef] | None = FALLBACK_REPOSITORY,
        request: RequestLike | None = None,
        save_kwargs: dict[str, Any] | None = None,
        fallback_save_kwargs: dict[str, Any] | None = None,
    ) -> Self:
        """Encode a Pillow image (`format`: png, jpeg, webp...; default its own format,
        else png) and save it. Needs Pillow."""
        try:
            importlib.import_module("PIL.Image")
        except ImportError:
            raise ImportError(
                "Image.from_pil needs Pillow, which is not installed: pip install pillow"
            ) from None
        fmt = (format or getattr(pil_image, "format", None) or "png").lower().lstrip(".")
        fmt = _FORMATS.get(fmt, fmt)
        if fmt == "jpeg" and pil_image.mode not in ("RGB", "L", "CMYK"):
            pil_image = pil_image.convert("RGB")  # JPEG has no alpha channel
        buffer = io.BytesIO()
        pil_image.save(buffer, format=fmt.upper())
        return cls.from_bytes(
            buffer.getvalue(),
            f"image/{fmt}",
            ImageSize(width=pil_image.width, height=pil_image.height),
            file_name or f"image.{'jpg' if fmt == 'jpeg' else fmt}",
            repository,
            fallback_repository,
            request,
            save_kwargs,
            fallback_save_kwargs,
        )

    def to_pil(self, mode: str = "RGB") -> Any:
        """The image as a Pillow image in `mode`. Needs Pillow."""
        try:
            pil = importlib.import_module("PIL.Image")
        except ImportError:
            raise ImportError("Image.to_pil needs Pillow, which is not installed") from None
        return pil.open(io.BytesIO(self.read_bytes())).convert(mode)

    @classmethod
    def _fields_from_data(cls, data: bytes) -> dict[str, Any]:
        return _size_fields(image_size(data))

    @classmethod
    def _fields_from_path(cls, path: Path) -> dict[str, Any]:
        return _size_fields(image_size(path))


def _image_type(content_type: str | None) -> str | None:
    if content_type and "/" not in content_type:
        fmt = content_type.lower().lstrip(".")
        return f"image/{_FORMATS.get(fmt, fmt)}"
    return content_type


def _size_fields(size: tuple[int, int] | None) -> dict[str, Any]:
    return {} if size is None else {"width": size[0], "height": size[1]}


def image_size(source: bytes | str | os.PathLike[str] | IO[bytes]) -> tuple[int, int] | None:
    """(width, height) from the image's header; None when the format is not known.

    Reads only the header (for a path or a file object, only what it needs).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _size_of(io.BytesIO(bytes(source)))
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as fp:
            return _size_of(fp)
    return _size_of(source)


def _size_of(fp: IO[bytes]) -> tuple[int, int] | None:
    start = fp.tell()
    head = fp.read(32)
    size: tuple[int, int] | None = None
    if head.startswith(_PNG) and head[12:16] == b"IHDR" and len(head) >= 24:
        size = struct.unpack(">II", head[16:24])
    elif head.startswith(b"\xff\xd8"):
        fp.seek(start + 2)
        size = _jpeg_size(fp)
    elif head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        size = struct.unpack("<HH", head[6:10])
    if size is not None:
        return size
    fp.seek(start)
    return _pillow_size(fp)


def _jpeg_size(fp: IO[bytes]) -> tuple[int, int] | None:
    """Walk the JPEG's marker segments up to the first start-of-frame."""
    for _ in range(_JPEG_MAX_SEGMENTS):
        byte = fp.read(1)
        if byte != b"\xff":
            return None
        marker = fp.read(1)
        while marker == b"\xff":  # fill bytes
            marker = fp.read(1)
        if not marker:
            return None
        code = marker[0]
        if code in _JPEG_NO_LENGTH:
            continue
        if code in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        raw = fp.read(2)
        if len(raw) != 2:
            return None
        (length,) = struct.unpack(">H", raw)
        if length < 2:
            return None
        if code in _JPEG_SOF:
            frame = fp.read(5)
            if len(frame) != 5:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            return (width, height) if width and height else None
        fp.seek(length - 2, os.SEEK_CUR)
    return None


def _pillow_size(fp: IO[bytes]) -> tuple[int, int] | None:
    try:
        pil = importlib.import_module("PIL.Image")
    except ImportError:
        return None
    try:
        with pil.open(fp) as image:  # reads the header only
            width, height = image.size
            return int(width), int(height)
    except Exception:
        return None
