"""`File`: bytes a handler returns by URL, and files a handler is given by URL (fal's toolkit).

Saving (`File.from_path`, `File.from_bytes`) writes into the platform's file store,
`$TIDAL_FILES_DIR/<32 hex id>/<file_name>`, which the platform serves at
`/files/<id>/<file_name>`. Inside a runner of the local backend the store is on the
same disk, so saving is a copy and a rename. (Runners on other machines will upload
over HTTP instead; that is a later issue.)

Reading: a field typed `File` also accepts a plain `http(s)://` URL or a `data:` URI,
and `read_bytes()` / `download()` fetch it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import mimetypes
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Protocol, Self
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from pydantic import BaseModel, Field, GetJsonSchemaHandler, PrivateAttr, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from tidal.storage.files import (
    FILES_DIR_ENV,
    NAME_MAX_BYTES,
    PUBLIC_URL_ENV,
    URL_PREFIX,
    file_path,
    file_url,
)
from tidal.toolkit.stores import (
    DEFAULT_REPOSITORY,
    FALLBACK_REPOSITORY,
    IN_MEMORY,
    IN_MEMORY_LIMIT,
    FileData,
    FileRepository,
    RepositoryRef,
    attempts,
    data_uri,
    in_a_runner,
    note_read_outside_a_runner,
)

OCTET_STREAM = "application/octet-stream"
DOWNLOAD_TIMEOUT = 60.0

_HOST = re.compile(r"[A-Za-z0-9._~\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_UNSAFE_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# Magic numbers for naming and typing bytes that came with neither a name nor a type.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)


class FileStoreError(RuntimeError):
    """A file could not be saved: no store to write to, or no URL to give it."""


class _URL(Protocol):
    @property
    def scheme(self) -> str: ...

    @property
    def netloc(self) -> str: ...


class RequestLike(Protocol):
    """What a URL is built from: a starlette/FastAPI `Request` is one."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def url(self) -> _URL: ...


class File(BaseModel):
    """A file given by URL, as fal serializes it: `{url, content_type, file_name, file_size}`."""

    url: str = Field(description="The URL where the file can be downloaded from.")
    content_type: str | None = Field(
        default=None, description="The mime type of the file.", examples=["image/png"]
    )
    file_name: str | None = Field(
        default=None, description="The name of the file.", examples=["z9RV14K95DvU.png"]
    )
    file_size: int | None = Field(
        default=None, description="The size of the file in bytes.", examples=[4404019]
    )

    # Bytes already at hand (saved from memory here), and the stored copy on this disk.
    _data: bytes | None = PrivateAttr(default=None)
    _local_path: Path | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        """Equal when they say the same: bytes cached in memory do not count."""
        if not isinstance(other, BaseModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    @model_validator(mode="before")
    @classmethod
    def _from_url_string(cls, value: Any) -> Any:
        """An input given as a plain URL (http, https or data) is a File at that URL."""
        if isinstance(value, str):
            return cls._fields_from_url(value)
        return value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """As an input, the schema says a URL string is accepted too."""
        schema = handler(core_schema)
        if handler.mode == "validation":
            url = {
                "type": "string",
                "format": "uri",
                "description": "An http(s) URL or a data: URI.",
            }
            return {"anyOf": [schema, url]}
        return schema

    @classmethod
    def _fields_from_url(cls, url: str) -> dict[str, Any]:
        url = url.strip()
        scheme = url.partition(":")[0].lower()
        if scheme == "data":
            content_type, data = parse_data_uri(url)
            return {**cls._fields_from_data(data), "url": url, "content_type": content_type,
                    "file_size": len(data)}  # fmt: skip
        if scheme in ("http", "https"):
            parts = urlsplit(url)
            if not parts.netloc:
                raise ValueError(f"not a usable URL (no host): {url[:200]!r}")
            basename = unquote(parts.path.rsplit("/", 1)[-1])
            name = sanitize_file_name(basename) if basename else None
            guessed = mimetypes.guess_type(name, strict=False)[0] if name else None
            return {"url": url, "content_type": guessed, "file_name": name}
        raise ValueError(
            "a file is given as an http(s) URL, a data: URI, or an object with a `url`; "
            f"got {url[:200]!r}"
        )

    @classmethod
    def _fields_from_data(cls, data: bytes) -> dict[str, Any]:
        """Fields a subclass reads from the bytes of a data: URI (Image: its size)."""
        return {}

    # -- saving ------------------------------------------------------------------

    @classmethod
    def _from_url(cls, url: str) -> Self:
        """The file at `url` (http, https or data), with what the URL tells of it."""
        return cls.model_validate(url)

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
        """Save a copy of the file at `path` (into the platform's store, unless
        `repository` says otherwise: see `tidal.toolkit.stores`) and return it by URL."""
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"no file at {source}")
        name = sanitize_file_name(file_name or source.name)
        content_type = content_type or guess_content_type(name)
        chain = attempts(repository, fallback_repository)
        kwargs = [save_kwargs or {}, fallback_save_kwargs or {}]
        return cls._saved(chain, kwargs, name, content_type, request, source=source)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        content_type: str | None = None,
        file_name: str | None = None,
        repository: RepositoryRef = DEFAULT_REPOSITORY,
        fallback_repository: RepositoryRef | list[RepositoryRef] | None = FALLBACK_REPOSITORY,
        request: RequestLike | None = None,
        save_kwargs: dict[str, Any] | None = None,
        fallback_save_kwargs: dict[str, Any] | None = None,
    ) -> Self:
        """Save `data` (into the platform's store, unless `repository` says otherwise)
        and return it by URL."""
        data = bytes(data)
        content_type = content_type or (
            guess_content_type(file_name) if file_name else sniff_content_type(data)
        )
        if file_name:
            name = sanitize_file_name(file_name)
        else:
            extension = mimetypes.guess_extension(content_type, strict=False) or ".bin"
            name = f"file{extension}"
        chain = attempts(repository, fallback_repository)
        kwargs = [save_kwargs or {}, fallback_save_kwargs or {}]
        return cls._saved(chain, kwargs, name, content_type, request, data=data)

    @classmethod
    def _saved(
        cls,
        chain: list[RepositoryRef],
        kwargs: list[dict[str, Any]],
        name: str,
        content_type: str,
        request: RequestLike | None,
        *,
        source: Path | None = None,
        data: bytes | None = None,
    ) -> Self:
        """Save to the first repository of `chain` that takes the file (fal's fallback)."""
        for i, repository in enumerate(chain):
            try:
                url, local, kept = _save_to(
                    repository, kwargs[min(i, 1)], name, content_type, request, source, data
                )
                break
            except Exception as exc:
                if i == len(chain) - 1:
                    raise
                print(f"tidal: saving {name} to {repository!r} failed ({exc}); trying "
                      f"{chain[i + 1]!r}", flush=True)  # fmt: skip
        size = len(data) if data is not None else (source or Path()).stat().st_size
        fields = (
            cls._fields_from_bytes(data)
            if data is not None
            else cls._fields_from_path(source or Path())
        )
        file = cls(url=url, content_type=content_type, file_name=name, file_size=size, **fields)
        file._local_path = local
        file._data = kept if kept is not None else data
        return file

    @classmethod
    def _fields_from_path(cls, path: Path) -> dict[str, Any]:
        """Fields a subclass reads from a saved file (Image: its size)."""
        return {}

    @classmethod
    def _fields_from_bytes(cls, data: bytes) -> dict[str, Any]:
        return cls._fields_from_data(data)

    # -- reading -----------------------------------------------------------------

    def read_bytes(self) -> bytes:
        """The file's bytes: from memory or this disk when at hand, else fetched or decoded."""
        if self._data is not None:
            return self._data
        local = self._local_copy()
        if local is not None:
            return local.read_bytes()
        scheme = self.url.partition(":")[0].lower()
        if scheme == "data":
            return parse_data_uri(self.url)[1]
        if scheme in ("http", "https"):
            import httpx

            response = httpx.get(self.url, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT)
            response.raise_for_status()
            return response.content
        raise ValueError(f"cannot read a file from {self.url[:200]!r}")

    def as_bytes(self) -> bytes:
        """fal's name for `read_bytes()`."""
        return self.read_bytes()

    def download(self, path: str | os.PathLike[str]) -> Path:
        """Write the file to `path` (into it, under `file_name`, if it is a directory).

        http(s) URLs are streamed to disk; the file appears whole or not at all.
        """
        target = Path(path)
        if target.is_dir():
            target = target / sanitize_file_name(self.file_name or "file")
        target.parent.mkdir(parents=True, exist_ok=True)
        scheme = self.url.partition(":")[0].lower()
        local = self._local_copy() if self._data is None else None
        if self._data is None and local is None and scheme in ("http", "https"):
            import httpx

            def fetch(out: IO[bytes]) -> None:
                with httpx.stream(
                    "GET", self.url, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT
                ) as response:
                    response.raise_for_status()
                    for chunk in response.iter_bytes(1024 * 1024):
                        out.write(chunk)

            _write_atomically(target, fetch)
        elif local is not None:
            _write_atomically(target, lambda out: _copy_from(local, out))
        else:
            data = self.read_bytes()
            _write_atomically(target, lambda out: out.write(data))
        return target

    def save(self, path: str | os.PathLike[str]) -> Path:
        """fal's name for `download()`."""
        return self.download(path)

    def _local_copy(self) -> Path | None:
        """The stored file itself when it is in this runner's store (no network needed:
        isolated runners have none). The id is random, so a match is this file."""
        if self._local_path is not None and self._local_path.is_file():
            return self._local_path
        store = os.environ.get(FILES_DIR_ENV)
        if not store or self.url.partition(":")[0].lower() not in ("http", "https"):
            return None
        path = urlsplit(self.url).path
        if not path.startswith(URL_PREFIX):
            return None
        parts = path[len(URL_PREFIX) :].split("/")
        if len(parts) != 2:
            return None
        candidate = file_path(Path(store), parts[0], unquote(parts[1]))
        if candidate is None or candidate.is_symlink() or not candidate.is_file():
            return None
        return candidate


# -- names, types, URLs ----------------------------------------------------------


def sanitize_file_name(name: str) -> str:
    """One safe path component: the basename, no control bytes, no leading dots,
    at most 255 bytes (the extension kept); "file" when nothing is left."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_NAME_CHARS.sub("", base).strip().lstrip(".").strip()
    if not base:
        return "file"
    if len(base.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        stem, dot, ext = base.rpartition(".")
        ext = f".{ext}" if dot and stem and len(ext.encode()) < 32 else ""
        stem = base[: len(base) - len(ext)]
        budget = NAME_MAX_BYTES - len(ext.encode())
        stem = stem.encode("utf-8", "surrogatepass")[:budget].decode("utf-8", "ignore")
        base = (stem + ext).strip() or "file"
    return base


def guess_content_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or OCTET_STREAM


def sniff_content_type(data: bytes) -> str:
    for magic, content_type in _MAGIC:
        if data.startswith(magic):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return OCTET_STREAM


def parse_data_uri(uri: str) -> tuple[str, bytes]:
    """(content type, decoded bytes) of a `data:` URI (RFC 2397)."""
    head, comma, payload = uri.partition(",")
    if not comma or not head.lower().startswith("data:"):
        raise ValueError("not a data: URI (data:[<type>][;base64],<data>)")
    params = [p.strip() for p in head[len("data:") :].split(";")]
    is_base64 = bool(params) and params[-1].lower() == "base64"
    if is_base64:
        params = params[:-1]
    content_type = params[0] if params and params[0] else "text/plain"
    if len(params) > 1:
        content_type = ";".join([content_type, *params[1:]])
    if not is_base64:
        return content_type, unquote_to_bytes(payload)
    compact = "".join(unquote(payload).split())
    compact += "=" * (-len(compact) % 4)
    try:
        if "-" in compact or "_" in compact:
            return content_type, base64.urlsafe_b64decode(compact)
        return content_type, base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the data: URI is not valid base64") from None


def base_url(request: RequestLike | None = None) -> str:
    """The platform's address as the caller sees it: the request's (behind a proxy,
    its X-Forwarded-Proto/Host) when given, else `TIDAL_PUBLIC_URL`."""
    if request is not None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        scheme = (request.url.scheme or "http").lower()
        proto = _first(headers.get("x-forwarded-proto")).lower() or scheme
        if proto not in ("http", "https"):
            proto = scheme if scheme in ("http", "https") else "http"
        for host in (
            _first(headers.get("x-forwarded-host")),
            headers.get("host", "").strip(),
            request.url.netloc,
        ):
            if host and _HOST.fullmatch(host):
                return f"{proto}://{host}"
    configured = os.environ.get(PUBLIC_URL_ENV, "").strip()
    if configured:
        return configured.rstrip("/")
    raise FileStoreError(
        "cannot build the file's URL: pass the handler's `request` "
        f"(File.from_path(..., request=request)) or set {PUBLIC_URL_ENV} "
        "(the platform sets it inside a tidal runner)"
    )


def _first(value: str | None) -> str:
    return (value or "").split(",", 1)[0].strip()


# -- the store -------------------------------------------------------------------


def store_dir() -> Path:
    store = os.environ.get(FILES_DIR_ENV, "").strip()
    if not store:
        raise FileStoreError(
            "files can only be saved inside a tidal runner, or where "
            f"{FILES_DIR_ENV} names the platform's file store directory"
        )
    return Path(store)


def _save(
    write: Callable[[IO[bytes]], object], name: str, request: RequestLike | None
) -> tuple[Path, str]:
    """Write a new stored file `<store>/<id>/<name>` atomically; its path and URL."""
    store = store_dir()
    base = base_url(request)  # before writing: no orphan files when there is no URL
    file_id = uuid.uuid4().hex
    target = file_path(store, file_id, name)
    if target is None:  # sanitize_file_name makes this unreachable
        raise ValueError(f"not a storable file name: {name!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_atomically(target, write)
    except BaseException:
        with contextlib.suppress(OSError):
            target.parent.rmdir()
        raise
    return target, file_url(base, file_id, name)


def _save_to(
    repository: RepositoryRef,
    options: dict[str, Any],
    name: str,
    content_type: str,
    request: RequestLike | None,
    source: Path | None,
    data: bytes | None,
) -> tuple[str, Path | None, bytes | None]:
    """Save into one repository: (URL, the stored copy on this disk, the bytes if read)."""
    if isinstance(repository, FileRepository):
        if source is not None:
            url, saved = repository.save_file(source, content_type, **options)
            return url, None, saved.data if saved is not None else None
        return repository.save(FileData(data or b"", content_type, name), **options), None, None
    if repository == IN_MEMORY or (not os.environ.get(FILES_DIR_ENV) and not in_a_runner()):
        # Outside a runner (at import, on the deploy machine) there is no store.
        size = len(data) if data is not None else (source or Path()).stat().st_size
        if repository != IN_MEMORY and size > IN_MEMORY_LIMIT:
            raise FileStoreError(
                f"{name} ({size} bytes) cannot be saved here: outside a tidal runner files "
                f"become data: URIs of at most {IN_MEMORY_LIMIT} bytes; save it inside "
                "setup() or an endpoint instead"
            )
        if source is not None and repository != IN_MEMORY:
            note_read_outside_a_runner(source)
        raw = data if data is not None else (source or Path()).read_bytes()
        return data_uri(raw, content_type), None, raw
    if source is not None:
        stored, url = _save(lambda out: _copy_from(source, out), name, request)
    else:
        stored, url = _save(lambda out: out.write(data or b""), name, request)
    return url, stored, None


def _write_atomically(target: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write into a dot-named temporary file beside `target`, then rename it into place."""
    temp = target.parent / f".{uuid.uuid4().hex}.tmp"
    try:
        with temp.open("xb") as out:
            write(out)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _copy_from(source: Path, out: IO[bytes]) -> None:
    with source.open("rb") as src:
        shutil.copyfileobj(src, out, 1024 * 1024)
