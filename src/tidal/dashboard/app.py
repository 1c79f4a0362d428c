"""The web dashboard, served by the platform at /dashboard (raw ASGI).

- `/dashboard/login`: the sign-in page. The admin key is POSTed once in the form's body;
  the answer sets a session cookie (tidal.dashboard.sessions), never the key.
- `/dashboard/`: the single-page app (static/js), which reads and changes the platform
  through `/dashboard/api/...` and `/dashboard/queue/...`: the control API and the queue
  API themselves, called in-process once the session is checked. The cookie is scoped to
  /dashboard, so it never reaches an app's runner, /api or /queue.
- `/dashboard/open/{owner}/{app}`: opens a private app's web UI in this browser with a
  session cookie for that app (tidal.gateway.browser).
- `/dashboard/upload`: a Playground file input, saved into the platform's file store.
- `/dashboard/static/...`: the page's own files and the front-end libraries that
  `make assets` vendors from npm (nothing is fetched from a CDN: it works offline).

Requests to api/, queue/, upload and logout must carry `X-Tidal-Dashboard: 1`: another
site can make a browser send the cookie only without custom headers (and SameSite=Strict
stops it being sent at all), so the header is the CSRF guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import mimetypes
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from tidal import __version__
from tidal.asgi import ClientGone, read_body, request_chunks, send_error
from tidal.control.keys import ADMIN
from tidal.dashboard.sessions import SessionStore, clear_cookie, cookie_of, set_cookie
from tidal.sandbox.status import platform_sandbox
from tidal.storage.files import file_path, file_url, files_dir, public_url, valid_file_name

if TYPE_CHECKING:
    from tidal.server import Platform

PREFIX = "/dashboard"
HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
# What `make assets` puts in static/vendor (see scripts/build-assets.sh).
VENDORED = ("jsoneditor.js", "chart.umd.min.js")
CSRF_HEADER = b"x-tidal-dashboard"
UPLOAD_LIMIT = 200 * 1024 * 1024
LOGIN_FORM_LIMIT = 4096
OWN_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
             ".svg": "image/svg+xml", ".map": "application/json"}  # fmt: skip

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob: http: https:; media-src 'self' data: blob: http: https:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
PAGE_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make Origin "null"
]

Scope = dict[str, Any]


def assets_missing() -> list[str]:
    return [name for name in VENDORED if not (STATIC / "vendor" / name).is_file()]


def render(template: str, **values: str) -> bytes:
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", html.escape(value, quote=True))
    return text.encode()


class Dashboard:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.sessions = SessionStore(platform.engine)

    @property
    def auth_on(self) -> bool:
        return self.platform.auth.enabled

    def _sandbox_banner(self) -> str:
        """Said on every page when local runners are not sandboxed; empty when they are."""
        backends = self.platform.backends
        status = platform_sandbox(backends.usable, backends.unusable)
        if status["state"] in ("on", "unused"):
            return ""
        return f"Runner sandbox {status['detail']}"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await receive()
            await send({"type": "websocket.close", "code": 1003})
            return
        path = scope["path"][len(PREFIX) :]
        method = scope["method"]
        if self.auth_on and not path.startswith("/static/"):
            await self._refresh(scope)
        if path == "":
            await _redirect(send, f"{PREFIX}/")
        elif path.startswith("/static/"):
            await self._static(send, path[len("/static/") :], method)
        elif path == "/login":
            if method == "POST":
                await self._sign_in(scope, receive, send)
            elif self._signed_in(scope):
                await _redirect(send, f"{PREFIX}/")
            else:
                await self._login_page(send, 200, "")
        elif path == "/":
            if not self._signed_in(scope):
                await _redirect(send, f"{PREFIX}/login")
            elif missing := assets_missing():
                await _page(send, 503, render("missing.html", missing=", ".join(missing)))
            else:
                await _page(send, 200, render("index.html", version=__version__,
                                              auth="on" if self.auth_on else "off",
                                              owner=self.platform.owner,
                                              base=str(self._base_url(scope)),
                                              sandbox=self._sandbox_banner()))  # fmt: skip
        elif path.startswith("/open/") and method == "GET":
            await self._open_app(scope, send, path[len("/open/") :])
        elif path.startswith(("/api/", "/queue/")) or path in ("/upload", "/logout", "/whoami"):
            refusal = self._check(scope)
            if refusal is not None:
                await send_error(send, *refusal)
            elif path == "/logout":
                await self._sign_out(scope, send)
            elif path == "/whoami":
                await self._whoami(scope, send)
            elif path == "/upload":
                await self._upload(scope, receive, send)
            else:
                await self._forward(scope, receive, send, path)
        else:
            await send_error(send, 404, "not_found", "no such dashboard page")

    # -- sessions ------------------------------------------------------------------

    async def _refresh(self, scope: Scope) -> None:
        """Read in a thread what the session check will need and the caches lack (the
        session, its key): the check runs on the event loop and reads only the caches."""
        sid = cookie_of(scope.get("headers") or [])
        if self.sessions.stale(sid):
            assert sid is not None
            await asyncio.to_thread(self.sessions.refresh, sid)
        session = self.sessions.peek(sid)
        if session is not None and self.platform.keys.stale(session.key_id):
            await asyncio.to_thread(self.platform.keys.refresh, session.key_id)

    def _session_key(self, scope: Scope) -> str | None:
        """The key id of a valid session's admin key, else None (from the caches, which
        `_refresh` filled)."""
        sid = cookie_of(scope.get("headers") or [])
        session = self.sessions.get(sid)
        if session is None:
            return None
        key = self.platform.keys.active(session.key_id)
        if key is None or key.scope != ADMIN:
            self.sessions.end_later(sid)
            return None
        return key.id

    def _signed_in(self, scope: Scope) -> bool:
        return not self.auth_on or self._session_key(scope) is not None

    def _check(self, scope: Scope) -> tuple[int, str, str] | None:
        headers = scope.get("headers") or []
        if not any(k.lower() == CSRF_HEADER for k, _ in headers):
            return 403, "forbidden", "dashboard calls carry the X-Tidal-Dashboard header"
        if not _same_origin(scope):
            return 403, "forbidden", "a dashboard call from another origin"
        if self.auth_on and self._session_key(scope) is None:
            return 401, "unauthorized", "sign in at /dashboard/login"
        return None

    async def _sign_in(self, scope: Scope, receive: Any, send: Any) -> None:
        if not _same_origin(scope):
            await self._login_page(send, 403, "That sign-in came from another site.")
            return
        body = await _read(receive, LOGIN_FORM_LIMIT)
        if body is None:
            await self._login_page(send, 413, "That form was too large.")
            return
        presented = (parse_qs(body.decode("latin-1")).get("key") or [""])[0].strip()
        if not self.auth_on:
            await _redirect(send, f"{PREFIX}/")
            return
        key = await asyncio.to_thread(self.platform.keys.verify, presented) if presented else None
        if key is None:
            await self._login_page(
                send, 401, "That key is not valid: it is malformed, unknown or revoked."
            )
            return
        if key.scope != ADMIN:
            await self._login_page(
                send, 403,
                f"The key {key.id} has scope {key.scope}; the dashboard needs an admin key.",
            )  # fmt: skip
            return
        sid = await asyncio.to_thread(self.sessions.create, key.id)
        secure = self.platform.config.scheme == "https"
        await _redirect(send, f"{PREFIX}/", [(b"set-cookie", set_cookie(sid, secure))])

    async def _open_app(self, scope: Scope, send: Any, rest: str) -> None:
        """`/dashboard/open/{owner}/{app}`: the app's web UI with a browser session for it
        (tidal.gateway.browser), standing for this dashboard session's key."""
        owner, _, app = rest.strip("/").partition("/")
        if (owner, app) not in self.platform.controller.deployments:
            await send_error(send, 404, "app_not_found", f"no app {app!r} of owner {owner!r}")
            return
        if not self._signed_in(scope):
            await _redirect(send, f"{PREFIX}/login")
            return
        key_id = self._session_key(scope) if self.auth_on else None
        browser = self.platform.auth.browser
        extra = [] if key_id is None or browser is None else [
            (b"set-cookie", await asyncio.to_thread(browser.start, key_id, owner, app))]  # fmt: skip
        await _redirect(send, f"/{owner}/{app}/", extra)

    async def _sign_out(self, scope: Scope, send: Any) -> None:
        await asyncio.to_thread(self.sessions.drop, cookie_of(scope.get("headers") or []))
        secure = self.platform.config.scheme == "https"
        await _json(send, 200, {"signed_out": True}, [(b"set-cookie", clear_cookie(secure))])

    async def _whoami(self, scope: Scope, send: Any) -> None:
        await _json(send, 200, {
            "key_id": self._session_key(scope) if self.auth_on else None,
            "auth": self.auth_on, "owner": self.platform.owner, "version": __version__,
            "base_url": self._base_url(scope),
        })  # fmt: skip

    async def _login_page(self, send: Any, status: int, error: str) -> None:
        if not self.auth_on:
            await _redirect(send, f"{PREFIX}/")
            return
        block = f'<p class="login-error" role="alert">{html.escape(error)}</p>' if error else ""
        page = render("login.html", version=__version__).replace(b"<!--error-->", block.encode())
        await _page(send, status, page)

    # -- the platform's own APIs, in-process ------------------------------------------

    async def _forward(self, scope: Scope, receive: Any, send: Any, path: str) -> None:
        """`/dashboard/api/...` is `/api/...`, `/dashboard/queue/...` is `/queue/...`."""
        headers = [
            (k, v) for k, v in scope.get("headers") or [] if k.lower() not in (b"cookie",
                                                                              b"authorization")
        ]  # fmt: skip
        inner = {**scope, "path": path, "raw_path": path.encode(), "headers": headers}
        target = self.platform.api if path.startswith("/api/") else self.platform.queue_http
        await target(inner, receive, send)

    async def _upload(self, scope: Scope, receive: Any, send: Any) -> None:
        """Save the body into the file store; answer `{url, content_type, file_name,
        file_size}` (tidal.toolkit.File's fields), the URL as runners reach the platform."""
        if scope["method"] != "POST":
            await send_error(send, 405, "method_not_allowed", "POST the file's bytes")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        name = unquote(headers.get("x-file-name", "")).strip().replace("/", "_") or "upload"
        name = name.lstrip(".") or "upload"
        if not valid_file_name(name):
            await send_error(send, 422, "invalid_file_name", "that file name cannot be stored")
            return
        config = self.platform.config
        store = files_dir(config.data_dir)
        file_id = uuid.uuid4().hex
        target = file_path(store, file_id, name)
        assert target is not None
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.parent / f".{name}.part"
        size = 0
        try:
            with partial.open("wb") as out:
                async for chunk in request_chunks(receive):
                    size += len(chunk)
                    if size > UPLOAD_LIMIT:
                        raise OverflowError
                    out.write(chunk)
            os.replace(partial, target)
        except (ClientGone, OverflowError) as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
                target.parent.rmdir()
            if isinstance(exc, OverflowError):
                await send_error(send, 413, "too_large",
                                 f"files up to {UPLOAD_LIMIT // 2**20} MB")  # fmt: skip
            return
        content_type = (
            headers.get("content-type", "").split(";")[0].strip()
            or mimetypes.guess_type(name)[0]
            or "application/octet-stream"
        )
        base = public_url(config.host, config.port, config.scheme)
        await _json(send, 201, {"url": file_url(base, file_id, name), "content_type": content_type,
                                "file_name": name, "file_size": size})  # fmt: skip

    # -- static files ------------------------------------------------------------------

    async def _static(self, send: Any, rel: str, method: str) -> None:
        if method not in ("GET", "HEAD"):
            await send_error(send, 405, "method_not_allowed", "GET only")
            return
        target = (STATIC / unquote(rel)).resolve()
        root = STATIC.resolve()
        if root not in target.parents or not target.is_file():
            await send_error(send, 404, "not_found", "no such file" + (
                "; the front-end libraries are built by `make assets`"
                if rel.startswith("vendor/") else ""))  # fmt: skip
            return
        data = target.read_bytes()
        content_type = OWN_TYPES.get(target.suffix) or (
            mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        )
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", f"{content_type}; charset=utf-8".encode()
             if content_type.startswith("text/") else content_type.encode()),
            (b"content-length", str(len(data)).encode()),
            (b"cache-control", b"no-cache"),
            (b"x-content-type-options", b"nosniff"),
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else data})

    def _base_url(self, scope: Scope) -> str:
        """The platform's URL as this browser reaches it (for the Playground's snippets)."""
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        if host:
            return f"{scope.get('scheme', 'http')}://{host}"
        config = self.platform.config
        return public_url(config.host, config.port, config.scheme)


def _same_origin(scope: Scope) -> bool:
    """No Origin header (same-origin GETs, older browsers) or one naming this host."""
    headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
    origin: str | None = headers.get(b"origin")
    if origin is None:
        return True
    host: str = headers.get(b"host", "")
    return origin.split("://", 1)[-1] == host


async def _read(receive: Any, limit: int) -> bytes | None:
    try:
        return await read_body(receive, limit)
    except (ClientGone, OverflowError):
        return None


async def _page(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*PAGE_HEADERS, (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


async def _redirect(
    send: Any, location: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send({"type": "http.response.start", "status": 303, "headers": [
        (b"location", location.encode()), (b"cache-control", b"no-store"),
        (b"content-length", b"0"), *(extra or [])]})  # fmt: skip
    await send({"type": "http.response.body", "body": b""})


async def _json(
    send: Any, status: int, value: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(value).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"cache-control", b"no-store"),
        (b"content-length", str(len(body)).encode()), *(extra or [])]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
