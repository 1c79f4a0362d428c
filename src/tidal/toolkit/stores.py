"""Where a saved `File` goes: fal's file repositories, by name or as an object.

fal's `File.from_path(path, repository=...)` names a repository ("fal", "fal_v3",
"cdn", "in_memory", ...) or passes a `FileRepository` object. On tidal:

- every hosted name ("fal", "fal_v2", "fal_v3", "cdn", "gcp_storage", "r2") is the
  platform's own file store (`/files/<id>/<name>`); tidal has no other storage;
- "in_memory" gives a `data:` URI holding the bytes (nothing is stored);
- a `FileRepository` object of the user's (a subclass overriding `save`) is called.

Outside a runner (a module saving a file at import time, on the deploy machine)
there is no store: the file becomes a `data:` URI, up to `IN_MEMORY_LIMIT` bytes.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import uuid
from pathlib import Path
from typing import Any

HOSTED = ("fal", "fal_v2", "fal_v3", "cdn", "gcp_storage", "r2")
IN_MEMORY = "in_memory"
DEFAULT_REPOSITORY = "fal_v3"
IN_MEMORY_LIMIT = 10 * 1024 * 1024


class FileData:
    """Bytes to save, with a content type and a file name (guessed when not given)."""

    def __init__(
        self, data: bytes, content_type: str | None = None, file_name: str | None = None
    ) -> None:
        self.data = data
        if content_type is None and file_name is not None:
            content_type = mimetypes.guess_type(file_name, strict=False)[0]
        self.content_type = content_type or "application/octet-stream"
        if file_name is None:
            extension = mimetypes.guess_extension(self.content_type, strict=False) or ".bin"
            file_name = f"{uuid.uuid4().hex}{extension}"
        self.file_name = file_name


class FileRepository:
    """A place files are saved to; subclass it and override `save` (fal's interface)."""

    def save(self, data: FileData, **options: Any) -> str:
        """Store `data`; return the URL it can be downloaded from."""
        raise NotImplementedError(f"{type(self).__name__}.save")

    def save_file(
        self, file_path: str | os.PathLike[str], content_type: str, **options: Any
    ) -> tuple[str, FileData | None]:
        data = FileData(Path(file_path).read_bytes(), content_type, Path(file_path).name)
        return self.save(data, **options), data


class InMemoryRepository(FileRepository):
    """Nothing stored: the URL is a `data:` URI holding the bytes."""

    def save(self, data: FileData, **options: Any) -> str:
        return data_uri(data.data, data.content_type)


def data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


RepositoryRef = FileRepository | str
FALLBACK_REPOSITORY: list[RepositoryRef] = ["fal"]


def attempts(
    repository: RepositoryRef, fallback: RepositoryRef | list[RepositoryRef] | None
) -> list[RepositoryRef]:
    """The repositories to try in order (fal's fallback rule), each checked."""
    chain = [
        repository,
        *(fallback if isinstance(fallback, list) else [fallback] if fallback else []),
    ]
    for ref in chain:
        if isinstance(ref, str) and ref not in (*HOSTED, IN_MEMORY):
            raise ValueError(
                f"{ref!r} is not a file repository: use one of "
                f"{', '.join(repr(r) for r in (*HOSTED, IN_MEMORY))} or a FileRepository object"
            )
        if not isinstance(ref, str | FileRepository):
            raise TypeError(
                f"repository must be a name or a FileRepository, not {type(ref).__name__}"
            )
    return chain


def in_a_runner() -> bool:
    return "TIDAL_RUNNER_ID" in os.environ


# Files a module saved outside a runner (at import, on the deploy machine). A runner
# imports the module again, so `tidal deploy` ships those under the app's folder in
# the code bundle, at the same place: the runner's `from_path` finds them there.
_read_outside_a_runner: set[Path] = set()


def note_read_outside_a_runner(path: Path) -> None:
    _read_outside_a_runner.add(path.resolve())


def files_to_ship(app_dir: Path) -> dict[str, Path]:
    """{name in the bundle: file} for the files saved at import from under `app_dir`."""
    root = app_dir.resolve()
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(_read_outside_a_runner)
        if path.is_relative_to(root) and path.is_file()
    }


class PlatformStore(FileRepository):
    """The platform's file store (what every hosted repository name means on tidal)."""

    def save(self, data: FileData, **options: Any) -> str:
        from tidal.toolkit.file import File

        return File.from_bytes(data.data, data.content_type, data.file_name).url
