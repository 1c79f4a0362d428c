"""An app's `/data` seen from outside its runners: list, read, write and remove files.

Runners write `/data` and runner code is untrusted, so a path is taken apart by the
file store's rules (each component one name: no `..`, no dot files, no control bytes,
at most 255 bytes) and walked one directory at a time with O_NOFOLLOW: a symbolic link
a runner left there is shown, removed, or refused, never followed.

`/data` is `<data dir>/data`, shared by every app of the platform (as fal's `/data` is
shared by an account's apps) and kept across deploys.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

from tidal.storage.files import valid_file_name

MAX_DEPTH = 64
MAX_PATH_BYTES = 4096
LIST_LIMIT = 10_000  # entries in one listing; more are counted, not sent
CHUNK_SIZE = 256 * 1024
_UPLOAD_PREFIX = ".tidal-upload-"  # a dot name: never listed, never addressable

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class DataPathError(ValueError):
    """A path the store could never hold, or an operation it refuses (answered 400)."""


class DataTooLarge(DataPathError):
    """An upload over the platform's limit (answered 413)."""


class DataNotFound(LookupError):
    """Nothing at that path (answered 404)."""


class DataConflict(Exception):
    """The path holds the wrong kind of thing: a folder for a file, a non-empty folder (409)."""


def data_root(data_dir: Path) -> Path:
    """The folder runners see as /data (the controller mounts the same one)."""
    return data_dir / "data"


def split_path(path: str) -> tuple[str, ...]:
    """`a/b/c.txt` as its names; '' or '/' is /data itself. Leading and trailing
    slashes are ignored; any other empty, `.`, `..` or hidden name is refused."""
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise DataPathError(f"the path is over {MAX_PATH_BYTES} bytes")
    trimmed = path.strip("/")
    parts = tuple(trimmed.split("/")) if trimmed else ()
    if len(parts) > MAX_DEPTH:
        raise DataPathError(f"the path is over {MAX_DEPTH} folders deep")
    for part in parts:
        if not valid_file_name(part):
            raise DataPathError(
                f"{part!r} in {path!r} is not a name /data files may have: one name per "
                "folder level, not empty, not starting with '.', no control characters, "
                "at most 255 bytes"
            )
    return parts


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "file", "dir", "link" (not followed) or "other"
    size: int
    modified: float

    def view(self) -> dict[str, object]:
        return {"name": self.name, "type": self.kind, "size": self.size, "modified": self.modified}


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "link" if stat.S_ISLNK(mode) else "other"


def _entry(name: str, st: os.stat_result) -> Entry:
    return Entry(name, _kind(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else 0,
                 st.st_mtime)  # fmt: skip


def _refused(exc: OSError, path: str, dir_fd: int = -1, name: str = "") -> Exception:
    if dir_fd >= 0 and exc.errno in (errno.ELOOP, errno.ENOTDIR):
        with contextlib.suppress(OSError):  # O_NOFOLLOW says ENOTDIR for a link to a folder
            if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return DataPathError(
                    f"{path!r} is a symbolic link: tidal files never follows links"
                )
    if exc.errno == errno.ELOOP:
        return DataPathError(f"{path!r} is a symbolic link: tidal files never follows links")
    if exc.errno == errno.ENOTDIR:
        return DataNotFound(f"{path!r}: a part of it is a file, not a folder")
    if exc.errno == errno.ENOENT:
        return DataNotFound(f"no such file or folder in /data: {path!r}")
    return exc


@contextlib.contextmanager
def _open_dir(root: Path, parts: tuple[str, ...], create: bool = False) -> Iterator[int]:
    """An fd of the folder `parts` under `root`, each level opened without following links."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, _DIR)
    try:
        for i, part in enumerate(parts):
            try:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:
                raise _refused(exc, "/".join(parts[: i + 1]), fd, part) from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def describe(root: Path, path: str) -> tuple[Entry | None, list[Entry], int, bool]:
    """(the entry at `path` if it is not a folder, the folder's entries up to LIST_LIMIT,
    hidden entries left out, whether the listing was cut)."""
    parts = split_path(path)
    if parts:
        with _open_dir(root, parts[:-1]) as parent:
            try:
                st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            except OSError as exc:
                raise _refused(exc, path) from None
        if not stat.S_ISDIR(st.st_mode):
            return _entry(parts[-1], st), [], 0, False
    entries: list[Entry] = []
    hidden = 0
    cut = False
    with _open_dir(root, parts) as fd, os.scandir(fd) as listing:
        for item in listing:
            if item.name.startswith("."):
                hidden += 1
                continue
            if len(entries) >= LIST_LIMIT:
                cut = True
                break
            with contextlib.suppress(OSError):  # gone since listed
                entries.append(_entry(item.name, item.stat(follow_symlinks=False)))
    entries.sort(key=lambda e: (e.kind != "dir", e.name))
    return None, entries, hidden, cut


def open_file(root: Path, path: str) -> tuple[int, os.stat_result]:
    """A read fd and stat of the regular file at `path` (the caller closes it)."""
    parts = split_path(path)
    if not parts:
        raise DataConflict("/data is a folder: give the path of a file in it")
    with _open_dir(root, parts[:-1]) as parent:
        try:
            fd = os.open(parts[-1], _FILE, dir_fd=parent)
        except OSError as exc:
            raise _refused(exc, path, parent, parts[-1]) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise DataConflict(f"{path!r} is a folder, not a file: list it with `tidal files ls`")
    return fd, st


def read_chunks(fd: int, size: int) -> Generator[bytes]:
    """The file's bytes in CHUNK_SIZE pieces; closes `fd` when done or abandoned."""
    try:
        offset = 0
        while offset < size:
            chunk = os.pread(fd, min(CHUNK_SIZE, size - offset), offset)
            if not chunk:
                return  # truncated under us
            offset += len(chunk)
            yield chunk
    finally:
        os.close(fd)


class Upload:
    """A file being written to /data: into a hidden temporary name in its folder, renamed
    over the target only once complete, so a reader never sees half a file."""

    def __init__(self, root: Path, path: str, limit: int) -> None:
        self.parts = split_path(path)
        if not self.parts:
            raise DataConflict("give the path of a file to write, not /data itself")
        self.path, self.limit, self.size = path, limit, 0
        self._dir_cm = _open_dir(root, self.parts[:-1], create=True)
        self._dir = self._dir_cm.__enter__()
        try:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self.parts[-1], dir_fd=self._dir, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    raise DataConflict(f"{path!r} is a folder; give a file's path")
            self._tmp = f"{_UPLOAD_PREFIX}{secrets.token_hex(8)}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            self._fd = os.open(self._tmp, flags, 0o644, dir_fd=self._dir)
        except BaseException:
            self._dir_cm.__exit__(None, None, None)
            raise

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise DataTooLarge(
                f"the upload is over the {self.limit // 2**20} MB limit of one /data file "
                "(the platform's data_upload_limit_bytes)"
            )
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]

    def commit(self) -> None:
        os.close(self._fd)
        self._fd = -1
        try:
            os.replace(self._tmp, self.parts[-1], src_dir_fd=self._dir, dst_dir_fd=self._dir)
        finally:
            self.abort()

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            with contextlib.suppress(OSError):
                os.unlink(self._tmp, dir_fd=self._dir)
        if self._dir >= 0:
            self._dir = -1
            self._dir_cm.__exit__(None, None, None)


def remove(root: Path, path: str, recursive: bool) -> str:
    """Remove a file, a link (not what it points to) or a folder; what was removed."""
    parts = split_path(path)
    if not parts:
        raise DataConflict("/data itself cannot be removed; remove what is in it")
    with _open_dir(root, parts[:-1]) as parent:
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            raise _refused(exc, path) from None
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=parent)
            return _kind(st.st_mode)
        if recursive:
            shutil.rmtree(name, dir_fd=parent)  # fd-based: never follows a link out
            return "dir"
        try:
            os.rmdir(name, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                raise DataConflict(
                    f"{path!r} is a folder with files in it: remove it with --recursive"
                ) from None
            raise
        return "dir"
