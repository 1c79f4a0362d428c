"""The CLI's client of the control-plane API."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from tidal.config import DEFAULT_URL, default_data_dir

if TYPE_CHECKING:  # httpx loads with the first Client: `tidal version` and `--help` need none
    import httpx


class CLIError(Exception):
    """An error shown to the user as one paragraph (a traceback only with --debug)."""


def load_httpx() -> None:
    """Import httpx without its own command line, which its __init__ loads when it can
    (click, pygments, rich.syntax): half of httpx's import time, never used here."""
    if "httpx" in sys.modules:
        return
    sys.modules["httpx._main"] = None  # type: ignore[assignment]  # import fails: httpx skips it
    try:
        import httpx  # noqa: F401
    finally:
        del sys.modules["httpx._main"]


def mask_key(key: str) -> str:
    """A key as it may be shown: its type prefix and last 4 characters (`tk_…abcd`)."""
    prefix = key[: key.index("_") + 1] if "_" in key[:8] else ""
    tail = key[-4:] if len(key) - len(prefix) >= 12 else ""
    return f"{prefix}…{tail}"


@dataclass(frozen=True)
class Target:
    """The platform a command talks to, and where its URL and key came from."""

    url: str
    key: str | None
    url_source: str  # "--url", "TIDAL_URL", "profile 'NAME'" or "default"
    key_source: str | None  # "TIDAL_KEY", "profile 'NAME'" or None
    profile: str | None  # the current profile, whether or not it gave the URL

    @property
    def where(self) -> str:
        return f"{self.url} (from {self.url_source})"


def resolve(url_option: str | None = None) -> Target:
    """--url > $TIDAL_URL > the current profile > DEFAULT_URL.

    The key: $TIDAL_KEY, else the key of the profile whose URL is the one chosen (the
    current profile's first), so a profile's key only ever goes to that profile's platform.
    """
    from tidal.cli.profiles import Profiles, load_profiles

    env_url = os.environ.get("TIDAL_URL", "").strip()
    try:
        profiles = load_profiles()
    except CLIError:
        if not (url_option or env_url):
            raise
        profiles = Profiles()  # a broken file must not block an explicit URL
    current = profiles.current_profile()
    if url_option:
        url, url_source = url_option, "--url"
    elif env_url:
        url, url_source = env_url, "TIDAL_URL"
    elif current is not None:
        url, url_source = current.url, f"profile {current.name!r}"
    else:
        url, url_source = DEFAULT_URL, "default"
    url = url.rstrip("/")
    key: str | None = os.environ.get("TIDAL_KEY", "").strip() or None
    key_source = "TIDAL_KEY" if key else None
    if key is None:
        candidates = [current] if current is not None else []
        candidates += sorted(profiles.profiles.values(), key=lambda p: p.name)
        owner = next((p for p in candidates if p.key and p.url.rstrip("/") == url), None)
        if owner is not None:
            key, key_source = owner.key, f"profile {owner.name!r}"
    if key is None and url == DEFAULT_URL:
        # The embedded platform on this machine: its admin key, where we may read it.
        local = default_data_dir() / "admin.key"
        with contextlib.suppress(OSError):
            key, key_source = local.read_text().strip() or None, str(local)
    return Target(url, key, url_source, key_source, current.name if current else None)


def resolve_target(url_option: str | None = None) -> tuple[str, str | None]:
    """(url, key) of the platform to talk to; see `resolve`."""
    target = resolve(url_option)
    return target.url, target.key


def platform_url(given: str | None = None) -> str:
    return resolve(given).url


def connect(url_option: str | None = None, timeout: float = 60.0) -> Client:
    """A client of the platform that `--url`, the environment or the profile names."""
    target = resolve(url_option)
    return Client(target.url, target.key, timeout=timeout, source=target.url_source)


class Client:
    def __init__(
        self,
        url: str,
        key: str | None = None,
        timeout: float = 60.0,
        source: str | None = None,
    ) -> None:
        self.url = url
        self.key = key
        self.source = source
        load_httpx()
        import httpx

        headers = {"authorization": f"Key {key}"} if key else {}
        # A plain-http platform never sees TLS from this client (it follows no redirects),
        # so the CA bundle, a third of a command's start, is not loaded for it.
        verify = not url.lower().startswith("http://")
        self._http = httpx.Client(base_url=url, timeout=timeout, headers=headers, verify=verify)

    def _redact(self, text: str) -> str:
        """Never show the key, whatever a platform (or proxy) echoes back."""
        return text.replace(self.key, mask_key(self.key)) if self.key else text

    def _failure(self, resp: httpx.Response) -> CLIError:
        text = _error_text(resp)
        if resp.status_code in (401, 403):
            if self.key:
                text += f". The platform refused the key {mask_key(self.key)}"
            else:
                text += (
                    ". This platform needs an API key: `tidal profile add NAME --url URL "
                    "--key KEY` (then `tidal profile use NAME`), or set TIDAL_KEY"
                )
        return CLIError(self._redact(text))

    @contextlib.contextmanager
    def _transport_errors(self, method: str, path: str) -> Iterator[None]:
        """httpx's failures to reach or hear the platform, as one-paragraph CLIErrors."""
        import httpx

        try:
            yield
        except httpx.ConnectError:
            origin = f" (from {self.source})" if self.source else ""
            raise CLIError(
                f"cannot reach a tidal platform at {self.url}{origin}. Start one with "
                "`tidal server` (or `tidal run FILE::NAME`, which starts one for you), or point "
                "the CLI at a running platform: `tidal profile add NAME --url URL`, then "
                "`tidal profile use NAME` (or set TIDAL_URL)."
            ) from None
        except httpx.TimeoutException:
            raise CLIError(
                f"the platform at {self.url} did not answer {method} {path} in time"
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            origin = f" (from {self.source})" if self.source else ""
            raise CLIError(
                f"{self.url!r}{origin} is not a platform URL; give one like https://tidal.example.com"
            ) from None

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._transport_errors(method, path):
            resp = self._http.request(method, path, **kwargs)
        if resp.status_code >= 400:
            raise self._failure(resp)
        return resp

    @contextlib.contextmanager
    def _stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A response whose body is read as it arrives; errors as `_request`'s."""
        with (
            self._transport_errors(method, path),
            self._http.stream(method, path, **kwargs) as resp,
        ):
            if resp.status_code >= 400:
                resp.read()
                raise self._failure(resp)
            yield resp

    def reachable(self) -> bool:
        import httpx

        try:
            return self._http.get("/api/v1/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str, **kwargs: Any) -> Any:
        return self._request("GET", path, **kwargs).json()

    def get_page(
        self, path: str, limit: int, cursor: str | None = None
    ) -> tuple[list[Any], str | None]:
        """One page of a paginated list, and the cursor of the next (None: the last)."""
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        resp = self._request("GET", path, params=params)
        return resp.json(), resp.headers.get("x-next-cursor")

    def post(self, path: str, **kwargs: Any) -> Any:
        return self._request("POST", path, **kwargs).json()

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self._request("PATCH", path, **kwargs).json()

    def put(self, path: str, **kwargs: Any) -> Any:
        return self._request("PUT", path, **kwargs).json()

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path).json()

    def delete_with(self, path: str, params: dict[str, Any]) -> Any:
        return self._request("DELETE", path, params=params).json()

    def close(self) -> None:
        self._http.close()

    def has_bundle(self, digest: str) -> bool:
        import httpx

        try:
            return self._http.head(f"/api/v1/bundles/{digest}").status_code == 200
        except httpx.HTTPError:
            return False

    def put_bundle(self, digest: str, data: bytes) -> None:
        self._request("PUT", f"/api/v1/bundles/{digest}", content=data,
                      headers={"content-type": "application/zip"})  # fmt: skip

    def upload(self, path: str, params: dict[str, Any], body: BinaryIO) -> Any:
        """PUT a file's bytes, read from `body` as they are sent (never whole in memory)."""
        return self._request("PUT", path, params=params, content=body,
                             headers={"content-type": "application/octet-stream"}).json()  # fmt: skip

    def download(self, path: str, params: dict[str, Any], sink: Callable[[bytes], Any]) -> int:
        """GET a body into `sink` chunk by chunk; the bytes received."""
        received = 0
        with self._stream("GET", path, params=params) as resp:
            for chunk in resp.iter_bytes():
                sink(chunk)
                received += len(chunk)
        return received

    def stream_lines(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        method: str = "GET",
        json: Any = None,
    ) -> Iterator[str]:
        with self._stream(method, path, params=params, json=json, timeout=None) as resp:
            yield from resp.iter_lines()


def _error_text(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    if isinstance(detail, list):  # FastAPI's validation errors
        detail = "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail
        )
    return f"{detail} (HTTP {resp.status_code})"


@contextlib.contextmanager
def client_for(ctx: Any) -> Iterator[Client]:
    """A client for a sub-command (`tidal --url URL secrets ...`): the root command's
    --url when given, else the usual resolution; closed afterwards."""
    url = ctx.find_root().params.get("url")
    api = connect(url if isinstance(url, str) else None)
    try:
        yield api
    finally:
        api.close()
