"""The file store: `<data>/files/<32 hex id>/<file_name>`, and the ASGI app serving it.

Runners write into the store (`tidal.toolkit.File`, told where by `TIDAL_FILES_DIR`);
the platform serves it read-only at `/files/{id}/{name}` with `FileServer`. The
layout is the contract between the two, so it lives here, in a module that imports
only the standard library (runners import it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import mimetypes
import os
import re
import stat
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from tidal.asgi import send_error

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Set by the platform in a runner's environment.
FILES_DIR_ENV = "TIDAL_FILES_DIR"  # the store directory (a path on the runner's disk)
PUBLIC_URL_ENV = "TIDAL_PUBLIC_URL"  # the platform's base URL, e.g. http://127.0.0.1:8787

URL_PREFIX = "/files/"
FILE_ID = re.compile(r"[0-9a-f]{32}")
NAME_MAX_BYTES = 255  # what ext4 and most other filesystems allow in one name
CHUNK_SIZE = 256 * 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RANGE_SPEC = re.compile(r"\s*([0-9]*)-([0-9]*)\s*")


def files_dir(data_dir: Path) -> Path:
    """The store inside the platform's data directory."""
    return data_dir / "files"


def public_url(host: str, port: int, scheme: str = "http") -> str:
    """The platform's base URL as runners should use it (`TIDAL_PUBLIC_URL` wins if set).

    A wildcard bind address is not something to put in a URL: it becomes loopback.
    """
    configured = os.environ.get(PUBLIC_URL_ENV)
    if configured:
        return configured.rstrip("/")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def runner_env(store: Path, host: str, port: int, scheme: str = "http") -> dict[str, str]:
    """The variables that let a runner's `tidal.toolkit.File` save into the store."""
    return {FILES_DIR_ENV: str(store), PUBLIC_URL_ENV: public_url(host, port, scheme)}


def valid_file_id(file_id: str) -> bool:
    return FILE_ID.fullmatch(file_id) is not None


def valid_file_name(name: str) -> bool:
    """A name the store could hold: one path component, no dot files, no control bytes."""
    return (
        bool(name)
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and _CONTROL.search(name) is None
        and len(name.encode("utf-8", "surrogatepass")) <= NAME_MAX_BYTES
    )


def file_path(store: Path, file_id: str, name: str) -> Path | None:
    """Where `/files/{file_id}/{name}` lives in `store`, or None for a name it could never hold."""
    if not valid_file_id(file_id) or not valid_file_name(name):
        return None
    return store / file_id / name


def file_url(base_url: str, file_id: str, name: str) -> str:
    return f"{base_url.rstrip('/')}{URL_PREFIX}{file_id}/{quote(name, safe='')}"


class _NotFound(Exception):
    pass


class FileServer:
    """GET/HEAD `/files/{id}/{name}` from the store: raw ASGI, streamed, single ranges.

    Anything that is not exactly a 32-hex id and the stored file's own name is a 404
    (decoded `..`, `/` or NUL included; symlinks are not followed).
    """

    def __init__(self, store: Path, prefix: str = URL_PREFIX, chunk_size: int = CHUNK_SIZE) -> None:
        self.store = Path(store)
        self.prefix = prefix
        self.chunk_size = chunk_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":  # served on its own (tests, tools): nothing to set up
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind != "http":
            await send({"type": "websocket.close", "code": 1003})
            return
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await send_error(
                send, 405, "method_not_allowed", f"{method} is not allowed on files",
                [(b"allow", b"GET, HEAD")],
            )  # fmt: skip
            return
        head = method == "HEAD"
        path = scope["path"]
        if not path.startswith(self.prefix):
            await _not_found(send, head)
            return
        parts = path[len(self.prefix) :].split("/")
        if len(parts) != 2:
            await _not_found(send, head)
            return
        file_id, name = parts
        if file_path(self.store, file_id, name) is None:
            await _not_found(send, head)
            return
        try:
            fd, st = await asyncio.to_thread(self._open, file_id, name)
        except _NotFound:
            await _not_found(send, head)
            return
        try:
            await self._respond(scope, receive, send, fd, st, name, head)
        finally:
            os.close(fd)

    def _open(self, file_id: str, name: str) -> tuple[int, os.stat_result]:
        """Open the stored file without following links; its name must be listed as is."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            dir_fd = os.open(self.store / file_id, flags | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            raise _NotFound from None
        try:
            # Exact names only (a case-insensitive filesystem would match others).
            if name not in os.listdir(dir_fd):
                raise _NotFound
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError:
            raise _NotFound from None
        finally:
            os.close(dir_fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise _NotFound
        return fd, st

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        fd: int,
        st: os.stat_result,
        name: str,
        head: bool,
    ) -> None:
        size = st.st_size
        etag = f'"{st.st_mtime_ns:x}-{size:x}"'
        last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        request_headers = _headers(scope)
        content_type = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
        headers = [
            (b"accept-ranges", b"bytes"),
            (b"etag", etag.encode()),
            (b"last-modified", last_modified.encode()),
            # A URL names one file forever: the id is new for every saved file.
            (b"cache-control", b"public, max-age=31536000, immutable"),
            # Users' files share the platform's origin: never let one act as a page of it.
            (b"x-content-type-options", b"nosniff"),
            (b"content-security-policy", b"sandbox"),
            (b"content-disposition", f"inline; filename*=UTF-8''{quote(name, safe='')}".encode()),
        ]
        if_none_match = request_headers.get("if-none-match")
        if if_none_match is not None and _etag_matches(if_none_match, etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        wanted = request_headers.get("range")
        if_range = request_headers.get("if-range")
        if wanted is not None and if_range is not None and if_range not in (etag, last_modified):
            wanted = None  # the client's partial copy is stale: send the whole file
        span = _parse_range(wanted, size) if wanted is not None else None
        if isinstance(span, str):  # unsatisfiable
            await send_error(
                send, 416, "range_not_satisfiable", f"the file has {size} bytes",
                [(b"content-range", f"bytes */{size}".encode()), *headers[:1]], body=not head,
            )  # fmt: skip
            return
        if span is None:
            status, start, length = 200, 0, size
        else:
            status, (start, end) = 206, span
            length = end - start + 1
            headers.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
        headers += [
            (b"content-type", content_type.encode()),
            (b"content-length", str(length).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if head or length == 0:
            await send({"type": "http.response.body", "body": b""})
            return
        await self._stream(receive, send, fd, start, length)

    async def _stream(self, receive: Receive, send: Send, fd: int, start: int, length: int) -> None:
        gone = asyncio.Event()

        async def watch() -> None:  # stop reading the disk for a client that left
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())
        try:
            offset, end = start, start + length
            while offset < end and not gone.is_set():
                chunk = await asyncio.to_thread(
                    os.pread, fd, min(self.chunk_size, end - offset), offset
                )
                if not chunk:
                    break  # truncated under us: the client sees a short body
                offset += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": offset < end})
            if offset < end and not gone.is_set():
                await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _etag_matches(header: str, etag: str) -> bool:
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or etag in tags or f"W/{etag}" in tags


def _parse_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """One `bytes=` range as (first, last) inclusive; None means ignore it (send it all).

    Several ranges and malformed headers are ignored, as RFC 9110 allows.
    """
    unit, _, spec = header.partition("=")
    match = _RANGE_SPEC.fullmatch(spec)
    if unit.strip().lower() != "bytes" or match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # the last N bytes
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(size - suffix, 0), size - 1
    begin = int(first)
    if last and int(last) < begin:
        return None
    if begin >= size:
        return "unsatisfiable"
    end = min(int(last), size - 1) if last else size - 1
    return begin, end


async def _not_found(send: Send, head: bool) -> None:
    await send_error(send, 404, "file_not_found", "no such file", body=not head)
