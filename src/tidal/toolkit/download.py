"""Downloads for handlers, as fal's toolkit has them: `download_file(url, target_dir)`
and `download_model_weights(url)`, into `/data` so that every runner and every later
cold start reuses what one runner fetched.

- A file is written to a temporary name in its folder and renamed into place once
  complete: a crash never leaves a truncated file under the real name.
- Runners that start together and ask for the same URL take turns on a lock file in
  the target folder (`flock`, which also works between containers sharing `/data`):
  one downloads, the others find the finished file.
- `download_file` keeps a file whose size equals the server's Content-Length (one
  request, closed before the body); `download_model_weights` keeps a folder per URL
  and returns what it holds without asking the network at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from email.message import Message
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from tidal.toolkit.paths import data_dir, model_weights_dir

ONE_MB = 1024 * 1024
PROGRESS_EVERY_SECONDS = 5.0
TIMEOUT = httpx.Timeout(30.0, read=300.0)
_TEMP_PREFIX = ".tidal-download-"


class DownloadError(Exception):
    """A download that failed; the message names the URL and why."""


def url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def file_name_of(url: str, headers: Mapping[str, str]) -> str:
    """The server's Content-Disposition name, else the URL path's last part, else the
    URL's digest; never a path (a name with slashes keeps its last part)."""
    disposition = headers.get("content-disposition")
    name = ""
    if disposition:
        message = Message()
        message["content-disposition"] = disposition
        name = message.get_filename() or ""
    if not name:
        name = unquote(Path(urlparse(url).path).name)
    name = Path(name.replace("\\", "/")).name
    if name in ("", ".", "..") or name.startswith(_TEMP_PREFIX):
        name = url_digest(url)
    return name


@contextlib.contextmanager
def _turn(folder: Path, url: str) -> Iterator[None]:
    """One download of `url` into `folder` at a time, across processes and containers."""
    with open(folder / f".{url_digest(url)[:16]}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def download_file(
    url: str,
    target_dir: str | Path,
    *,
    force: bool = False,
    request_headers: Mapping[str, str] | None = None,
    filesize_limit: int | None = None,
) -> Path:
    """Download `url` into `target_dir` (relative: under /data) and return the file's
    path. An existing file of the size the server announces is kept unless `force`.
    `filesize_limit` is in megabytes. Raises DownloadError."""
    folder = Path(target_dir)
    if not folder.is_absolute():
        folder = data_dir() / folder
    folder.mkdir(parents=True, exist_ok=True)
    limit = None if filesize_limit is None else filesize_limit * ONE_MB
    with _turn(folder, url):
        try:
            with httpx.stream(
                "GET", url, headers={"accept-encoding": "identity", **(request_headers or {})},
                follow_redirects=True,
                timeout=TIMEOUT,
            ) as response:  # fmt: skip
                if response.status_code >= 400:
                    raise DownloadError(
                        f"downloading {url} failed: the server answered HTTP "
                        f"{response.status_code} {response.reason_phrase}"
                    )
                target = folder / file_name_of(url, response.headers)
                length = int(response.headers.get("content-length", -1))
                if limit is not None and length > limit:
                    raise DownloadError(
                        f"downloading {url} refused: it is {length / ONE_MB:.1f} MB, over "
                        f"filesize_limit={filesize_limit} MB"
                    )
                if not force and target.is_file() and target.stat().st_size == length:
                    return target  # (an unknown length, -1, never matches)
                _save(response, url, target, length, limit, filesize_limit)
        except httpx.HTTPError as exc:
            raise DownloadError(f"downloading {url} failed: {type(exc).__name__}: {exc}") from None
    return target


def _save(
    response: httpx.Response,
    url: str,
    target: Path,
    length: int,
    limit: int | None,
    filesize_limit: int | None,
) -> None:
    fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=target.parent)
    try:
        received, shown = 0, time.monotonic()
        print(f"downloading {url} to {target}", flush=True)
        with os.fdopen(fd, "wb") as out:
            for chunk in response.iter_raw(ONE_MB):  # as served: Content-Length counts these
                out.write(chunk)
                received += len(chunk)
                if limit is not None and received > limit:
                    raise DownloadError(
                        f"downloading {url} stopped: more than filesize_limit="
                        f"{filesize_limit} MB arrived"
                    )
                if time.monotonic() - shown >= PROGRESS_EVERY_SECONDS:
                    shown = time.monotonic()
                    of = f" of {length / ONE_MB:.1f} MB" if length >= 0 else " MB"
                    print(f"downloading {url}: {received / ONE_MB:.1f}{of}", flush=True)
        if 0 <= length != received:
            raise DownloadError(
                f"downloading {url} failed: the server announced {length} bytes and sent {received}"
            )
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def download_model_weights(
    url: str, force: bool = False, request_headers: Mapping[str, str] | None = None
) -> Path:
    """Download model weights once for every runner: into /data/.tidal/model_weights/
    <sha256 of the URL>/, and later calls return that file without a request."""
    folder = model_weights_dir() / url_digest(url)
    if not force:
        found = _complete(folder)
        if found is not None:
            return found
    return download_file(url, folder, force=force, request_headers=request_headers)


def _complete(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            return path
    return None
