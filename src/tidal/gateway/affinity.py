"""Session affinity keys: what ties a client's requests and WebSockets to one runner.

The app's `affinity` option names where the key is read: "cookie" (a random id the
gateway hands out in a cookie scoped to the app's path), "header:<name>" or
"query:<name>" (a value the client sends itself, such as ComfyUI's `clientId`). The
router pins each key to a runner (tidal.domain.router).
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs

COOKIE = "tidal_affinity"
# A key longer than this is cut: the router remembers keys, and callers are untrusted.
MAX_KEY = 256


def affinity_key(
    scope: dict[str, Any], mode: str | None, prefix: str
) -> tuple[str | None, bytes | None]:
    """(the request's affinity key or None, a Set-Cookie value to send back or None).
    `prefix` is the app's path, /{owner}/{app}, which scopes the cookie."""
    if not mode:
        return None, None
    kind, _, name = mode.partition(":")
    headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
    if kind == "header":
        wanted = name.lower().encode("latin-1")
        value = next((v for k, v in headers if k.lower() == wanted), b"")
        return _key(value.decode("latin-1")), None
    if kind == "query":
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
        return _key(values[0] if values else ""), None
    cookie = cookie_value(headers, COOKIE)
    if cookie:
        return _key(cookie), None
    minted = secrets.token_urlsafe(16)
    return minted, f"{COOKIE}={minted}; Path={prefix}; HttpOnly; SameSite=Lax".encode()


def cookie_value(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    """The value of cookie `name` in the request's Cookie header(s)."""
    for k, v in headers:
        if k.lower() != b"cookie":
            continue
        for part in v.decode("latin-1").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name and value:
                return value
    return None


def _key(value: str) -> str | None:
    value = value.strip()[:MAX_KEY]
    return value or None
