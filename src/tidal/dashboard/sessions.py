"""Dashboard sign-in sessions: a random id in an HttpOnly, SameSite=Strict cookie scoped to
/dashboard; the admin key it stands for stays in this process's memory.

The key is given once, in the sign-in form's POST body, and never reaches a URL, the
browser's storage or the page's JavaScript. Each request re-verifies the key against the
key store, so a revoked key ends its sessions at once. Sessions live in memory: a
platform restart signs everyone out.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

COOKIE = "tidal_dashboard"
IDLE_SECONDS = 8 * 3600.0
MAX_SECONDS = 24 * 3600.0
MAX_SESSIONS = 1000


@dataclass
class Session:
    key: str  # "<id>:<secret>", verified again on every request
    key_id: str
    created: float
    seen: float


class SessionStore:
    def __init__(self, idle_seconds: float = IDLE_SECONDS, max_seconds: float = MAX_SECONDS):
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self._sessions: dict[str, Session] = {}

    def create(self, key: str, key_id: str) -> str:
        now = time.time()
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:  # the oldest go first
            for sid in sorted(self._sessions, key=lambda s: self._sessions[s].seen)[:100]:
                del self._sessions[sid]
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = Session(key, key_id, now, now)
        return sid

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        now = time.time()
        if now - session.seen > self.idle_seconds or now - session.created > self.max_seconds:
            del self._sessions[sid]
            return None
        session.seen = now
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def _expire(self, now: float) -> None:
        for sid, s in list(self._sessions.items()):
            if now - s.seen > self.idle_seconds or now - s.created > self.max_seconds:
                del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)


def cookie_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The session id from the request's Cookie header(s)."""
    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            k, _, v = part.strip().partition("=")
            if k == COOKIE and v:
                return v
    return None


def set_cookie(sid: str, secure: bool) -> bytes:
    flags = "; Secure" if secure else ""
    return f"{COOKIE}={sid}; Path=/dashboard; HttpOnly; SameSite=Strict{flags}".encode()


def clear_cookie(secure: bool) -> bytes:
    flags = "; Secure" if secure else ""
    return f"{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0{flags}".encode()
