"""Browser sessions for private apps: a browser cannot send `Authorization: Key`, so a
signed-in person gets a session cookie for one app instead.

Two ways in, both ending in the same cookie:

- `tidal apps open APP` asks the control API for a link holding a one-time token
  (`?tidal_link=...`, valid LINK_SECONDS, used once); the gateway exchanges it for the
  cookie and redirects to the same URL without the token;
- `/dashboard/open/{owner}/{app}` does the same for a browser signed in to the dashboard.

The cookie (`tidal_app`) holds a random id, never a key: `Path=/{owner}/{app}`,
`HttpOnly`, `SameSite=Lax`, `Secure` on https. Its row (tidal.dashboard.sessions: the
hash of the app's path and the id, and the id of the key that opened it) is valid only
for that app, ends when that key is revoked, and expires like a dashboard session. The
cookie is removed from the request before it reaches the runner.

CSRF: `SameSite=Lax` keeps the cookie off other sites' POSTs, subrequests and WebSockets;
on top, a cookie-authenticated request that is not GET/HEAD/OPTIONS, and every WebSocket,
must not come from another origin (`Origin`, `Sec-Fetch-Site`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from tidal.control.keys import KeyStore
from tidal.dashboard.sessions import SessionStore
from tidal.gateway.affinity import cookie_value

COOKIE = "tidal_app"
LINK_PARAM = "tidal_link"
LINK_SECONDS = 60.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = dict[str, Any]
Refusal = tuple[int, str, str]


def _session_bind(owner: str, app: str) -> str:
    return f"app:/{owner}/{app}:"


def _link_bind(owner: str, app: str) -> str:
    return f"link:/{owner}/{app}:"


class BrowserSessions:
    def __init__(self, sessions: SessionStore, keys: KeyStore, secure: bool) -> None:
        self.sessions = sessions
        self.keys = keys
        self.secure = secure

    # -- minting -------------------------------------------------------------------
    def link_token(self, key_id: str, owner: str, app: str) -> str:
        """A one-time token for `?tidal_link=`; exchanged by open_link within LINK_SECONDS."""
        return self.sessions.create(key_id, _link_bind(owner, app))

    def start(self, key_id: str, owner: str, app: str) -> bytes:
        """A new session for the app; returns its Set-Cookie header value."""
        sid = self.sessions.create(key_id, _session_bind(owner, app))
        flags = "; Secure" if self.secure else ""
        return f"{COOKIE}={sid}; Path=/{owner}/{app}; HttpOnly; SameSite=Lax{flags}".encode()

    def open_link(self, token: str, owner: str, app: str) -> bytes | None:
        """The Set-Cookie of a new session when `token` is a fresh, unused link, else None."""
        bind = _link_bind(owner, app)
        link = self.sessions.get(token, bind)
        if link is None or not self.sessions.drop(token, bind):
            return None  # unknown, expired, or used (by this or another replica)
        if time.time() - link.created > LINK_SECONDS or self._key_scope(link.key_id) is None:
            return None
        return self.start(link.key_id, owner, app)

    # -- checking ------------------------------------------------------------------
    async def refresh(self, scope: Scope, owner: str, app: str) -> None:
        """Read in a thread what `admit` will need and the caches lack (the session, its
        key): `admit` runs on the event loop and reads only the caches."""
        sid = cookie_value(scope.get("headers") or [], COOKIE)
        if sid is None:
            return
        bind = _session_bind(owner, app)
        if self.sessions.stale(sid, bind):
            await asyncio.to_thread(self.sessions.refresh, sid, bind)
        session = self.sessions.peek(sid, bind)
        if session is not None and self.keys.stale(session.key_id):
            await asyncio.to_thread(self.keys.refresh, session.key_id)

    def admit(self, scope: Scope, owner: str, app: str) -> Refusal | None:
        """None when the request carries a valid session for this app from this site;
        the session's cookie is then removed from the request."""
        headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
        sid = cookie_value(headers, COOKIE)
        if sid is None:
            return 401, "unauthorized", "no session"
        session = self.sessions.get(sid, _session_bind(owner, app))
        if session is None or self.keys.active(session.key_id) is None:
            return (
                401,
                "unauthorized",
                (
                    "the browser session for this app has ended or its key was revoked; "
                    "open the app again with `tidal apps open` or from the dashboard"
                ),
            )
        unsafe = scope["type"] == "websocket" or scope.get("method") not in SAFE_METHODS
        if unsafe and cross_site(headers):
            return (
                403,
                "forbidden",
                ("a request from another site cannot use this app's browser session"),
            )
        scope["headers"] = _without_cookie(headers, COOKIE)
        return None

    def _key_scope(self, key_id: str) -> str | None:
        key = self.keys.active(key_id)
        return None if key is None else key.scope


def link_in(scope: Scope) -> str | None:
    """The one-time link token of a GET, if it has one."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    query: bytes = scope.get("query_string", b"")
    for name, value in parse_qsl(query.decode("latin-1")):
        if name == LINK_PARAM:
            return value[:128]
    return None


def without_link(scope: Scope) -> bytes:
    """The request's path and query, the link token taken out: where to go next."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    rest = [
        (k, v)
        for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), True)
        if k != LINK_PARAM
    ]
    return raw_path + (b"?" + urlencode(rest).encode("latin-1") if rest else b"")


def cross_site(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a browser says the request comes from another origin."""
    seen = {k.lower(): v.decode("latin-1") for k, v in headers}
    site = seen.get(b"sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = seen.get(b"origin")
    if origin is None:
        return False  # not a browser's cross-origin request (they all send Origin)
    return origin.split("://", 1)[-1] != seen.get(b"host", "")


def _without_cookie(headers: list[tuple[bytes, bytes]], name: str) -> list[tuple[bytes, bytes]]:
    out = []
    for k, v in headers:
        if k.lower() == b"cookie":
            kept = [
                p for p in v.decode("latin-1").split(";")
                if p.strip().partition("=")[0] != name
            ]  # fmt: skip
            if not any(p.strip() for p in kept):
                continue
            v = ";".join(kept).strip().encode("latin-1")
        out.append((k, v))
    return out
