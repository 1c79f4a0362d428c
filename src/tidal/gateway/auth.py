"""API key checks in front of every path family of the platform (raw ASGI).

With the platform's `auth` setting on, a request carries `Authorization: Key <id>:<secret>`:

- `/api/v1/health`: open (load balancers and `tidal doctor` probe it);
- `/api/...` (the control plane): an `admin` key;
- `/{owner}/{app}/...`, `/queue/{owner}/{app}/...` and WebSockets to apps: an `invoke` or
  `admin` key, or none at all when the app was deployed public; `/{owner}/{app}/...`
  also takes a browser session cookie for that app (tidal.gateway.browser), and a GET
  with a one-time `?tidal_link=` token is answered with that cookie and a redirect;
- `/files/...`: open. A file's URL holds a random 128-bit id, unguessable, and it is
  handed to whoever called the app (and put in `<img src>` tags, which send no header).
- `/metrics`: an `admin` key, unless the platform's `metrics_open` setting is on.
- `/dashboard/...`: let through; the dashboard signs its users in itself (an admin key,
  once, for a session cookie: tidal.dashboard).

No key: 401; a malformed, unknown or revoked key: 401; a key whose scope does not reach
the path: 403 (`{"detail", "error_type"}` like the gateway's other errors). An answer
never echoes the key it refused. On the data path our `Key` header is removed before the
request goes on, so that a runner (its logs, the durable queue's stored headers) never
sees a platform key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tidal.asgi import send_error
from tidal.control.keys import ADMIN, KeyInfo, KeyStore, parse_key
from tidal.gateway.affinity import cookie_value
from tidal.gateway.browser import COOKIE, BrowserSessions, link_in, without_link

Scope = dict[str, Any]
IsPublic = Callable[[str, str], bool]

OPEN_API_PATHS = frozenset({"/api/v1/health"})
HOW = "send `Authorization: Key <id>:<secret>` (create keys with `tidal keys create`)"


class Authenticator:
    def __init__(
        self, store: KeyStore, enabled: bool, is_public: IsPublic, metrics_open: bool = False
    ) -> None:
        self.store = store
        self.enabled = enabled
        self.is_public = is_public
        self.metrics_open = metrics_open
        # Private apps' browser sessions; set by the platform (it owns the session store).
        self.browser: BrowserSessions | None = None

    @classmethod
    def for_platform(cls, store: KeyStore, config: Any, is_public: IsPublic) -> Authenticator:
        """The platform's checker; with auth on and no admin key, one is created and
        written to `<data_dir>/admin.key` (see KeyStore.bootstrap)."""
        enabled = bool(getattr(config, "auth", False))
        if enabled:
            store.bootstrap(Path(config.data_dir))
        return cls(store, enabled, is_public, bool(getattr(config, "metrics_open", False)))

    async def admit(self, scope: Scope, receive: Any, send: Any) -> bool:
        """True when the request may go on; otherwise the refusal is sent (HTTP) or the
        WebSocket closed, and False is returned."""
        if not self.enabled:
            return True
        if self.browser is not None and (token := link_in(scope)):
            owner, app = _owner_app(scope["path"])
            if owner and app and _app_path(scope["path"]):
                await self._open_link(token, owner, app, scope, send)
                return False
        await self._refresh(scope)
        refusal = self.check(scope)
        if refusal is None:
            return True
        status, error_type, detail = refusal
        if scope["type"] == "websocket":
            await receive()  # websocket.connect; a close before accept is an HTTP 403
            await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
            return False
        extra = [(b"www-authenticate", b"Key")] if status == 401 else []
        await send_error(send, status, error_type, detail, extra)
        return False

    async def _refresh(self, scope: Scope) -> None:
        """Read in a thread what the check will need and the caches lack (a key not seen
        for REVALIDATE_SECONDS, a browser session): the check itself runs on the event
        loop, reading only the caches, so no request waits behind a database read."""
        headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
        presented = next(
            (v for k, v in headers if k.lower() == b"authorization" and v[:4].lower() == b"key "),
            None,
        )
        parsed = parse_key(presented[4:].decode("latin-1").strip()) if presented else None
        if parsed is not None and self.store.stale(parsed[0]):
            await asyncio.to_thread(self.store.refresh, parsed[0])
        if self.browser is not None and not presented:
            owner, app = _owner_app(scope["path"])
            if owner and app and _app_path(scope["path"]):
                await self.browser.refresh(scope, owner, app)

    def is_admin(self, scope: Scope) -> bool:
        """Whether the request carries a valid admin key (every request does, auth off)."""
        if not self.enabled:
            return True
        key, refusal = self._key(scope, strip=False)
        return refusal is None and key is not None and key.scope == ADMIN

    def check(self, scope: Scope) -> tuple[int, str, str] | None:
        """None when allowed, else (status, error_type, detail). On the data path, our
        Authorization header is dropped from `scope` once read."""
        path: str = scope["path"]
        if path in OPEN_API_PATHS:
            return None
        if path == "/dashboard" or path.startswith("/dashboard/"):
            return None  # its own sign-in and session checks: tidal.dashboard
        if path == "/metrics" and self.metrics_open:
            return None
        if path.startswith("/api/") or path == "/metrics":
            key, refusal = self._key(scope, strip=False)
            if refusal is not None:
                return refusal
            assert key is not None
            scope["tidal.key_id"] = key.id  # who asks: browser links are opened as them
            if key.scope != ADMIN:
                return (
                    403,
                    "forbidden",
                    f"the API key {key.id} (scope {key.scope}) may only call apps; the "
                    "control-plane API needs an admin key",
                )
            return None
        if path.startswith("/files/"):
            return None  # unguessable ids: see the module's docstring
        owner, app = _owner_app(path)
        public = bool(owner and app and self.is_public(owner, app))
        keyed = _has_key(scope)
        _, refusal = self._key(scope, strip=True, check=not public)
        if public or refusal is None:
            return None
        if (
            self.browser is not None and owner and app and _app_path(path)
            and not keyed and cookie_value(scope.get("headers") or [], COOKIE)
        ):  # fmt: skip
            return self.browser.admit(scope, owner, app)
        return refusal

    async def _open_link(self, token: str, owner: str, app: str, scope: Scope, send: Any) -> None:
        assert self.browser is not None
        # Once per link: its reads and writes (the link used up, a session made) in a thread.
        cookie = await asyncio.to_thread(self.browser.open_link, token, owner, app)
        if cookie is None:
            await send_error(send, 401, "unauthorized",
                             "this link has expired or was used already; get a new one with "
                             f"`tidal apps open {app}` or open the app from the dashboard")  # fmt: skip
            return
        await send({"type": "http.response.start", "status": 303, "headers": [
            (b"location", without_link(scope)), (b"set-cookie", cookie),
            (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"),
            (b"content-length", b"0")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})

    def _key(
        self, scope: Scope, strip: bool, check: bool = True
    ) -> tuple[KeyInfo | None, tuple[int, str, str] | None]:
        headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
        ours = [v for k, v in headers if k.lower() == b"authorization" and v[:4].lower() == b"key "]
        if strip and ours:
            scope["headers"] = [
                (k, v) for k, v in headers if not (k.lower() == b"authorization" and v in ours)
            ]
        if not check:
            return None, None
        if not ours:
            return None, (
                401, "unauthorized",
                f"this needs an API key: {HOW}; in a browser, open the app with "
                "`tidal apps open APP` or from the dashboard",
            )  # fmt: skip
        if len(ours) > 1:
            return None, (401, "unauthorized", "send one Authorization header, not several")
        presented = ours[0][4:].decode("latin-1").strip()
        key = self.store.verify(presented)  # on the loop: admit() refreshed it
        if key is None:
            return None, (
                401,
                "unauthorized",
                "the API key is not valid (malformed, unknown or revoked); " + HOW,
            )
        return key, None


def _has_key(scope: Scope) -> bool:
    return any(
        k.lower() == b"authorization" and v[:4].lower() == b"key "
        for k, v in scope.get("headers") or []
    )


def _app_path(path: str) -> bool:
    """A sync path to an app (not the queue's): where browser sessions apply."""
    return not path.startswith(("/queue/", "/api/", "/files/", "/dashboard"))


def _owner_app(path: str) -> tuple[str, str]:
    """The (owner, app) a data-path request is for ("" where the path names none)."""
    parts = path.split("/", 4)
    if path.startswith("/queue/"):
        parts = parts[1:]
    return (parts[1], parts[2]) if len(parts) > 2 else ("", "")
