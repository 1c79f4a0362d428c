"""The CLI's client of the control-plane API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx

from tidal.config import DEFAULT_URL


class CLIError(Exception):
    """An error shown to the user as one paragraph (a traceback only with --debug)."""


def platform_url(given: str | None = None) -> str:
    return (given or os.environ.get("TIDAL_URL") or DEFAULT_URL).rstrip("/")


class Client:
    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url
        self._http = httpx.Client(base_url=url, timeout=timeout)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise CLIError(
                f"cannot reach a tidal platform at {self.url}. Start one with `tidal server` "
                "(or `tidal run FILE::NAME`, which starts one for you), or point TIDAL_URL "
                "at a running platform."
            ) from None
        except httpx.TimeoutException:
            raise CLIError(
                f"the platform at {self.url} did not answer {method} {path} in time"
            ) from None
        if resp.status_code >= 400:
            raise CLIError(_error_text(resp))
        return resp

    def reachable(self) -> bool:
        try:
            return self._http.get("/api/v1/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str, **kwargs: Any) -> Any:
        return self._request("GET", path, **kwargs).json()

    def post(self, path: str, **kwargs: Any) -> Any:
        return self._request("POST", path, **kwargs).json()

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self._request("PATCH", path, **kwargs).json()

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path).json()

    def has_bundle(self, digest: str) -> bool:
        try:
            return self._http.head(f"/api/v1/bundles/{digest}").status_code == 200
        except httpx.HTTPError:
            return False

    def put_bundle(self, digest: str, data: bytes) -> None:
        self._request("PUT", f"/api/v1/bundles/{digest}", content=data,
                      headers={"content-type": "application/zip"})  # fmt: skip

    def stream_lines(self, path: str, params: dict[str, Any]) -> Iterator[str]:
        try:
            with self._http.stream("GET", path, params=params, timeout=None) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise CLIError(_error_text(resp))
                yield from resp.iter_lines()
        except httpx.ConnectError:
            raise CLIError(f"cannot reach a tidal platform at {self.url}") from None


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
