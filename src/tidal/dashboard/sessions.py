"""Dashboard sign-in sessions: a random id in an HttpOnly, SameSite=Strict cookie scoped to
/dashboard, standing for the admin key that signed in.

The key is given once, in the sign-in form's POST body, and never reaches a URL, the
browser's storage, the page's JavaScript or the database: a session row holds a SHA-256
of the cookie's id (256 random bits, so a plain hash suffices) and the key's id. Every
request checks that key is still an unrevoked admin key, so revoking it ends its
sessions. Sessions are in the platform's database, so a restart keeps them and every
gateway replica behind a load balancer knows them; each replica caches a session for a
few seconds, which is how late a sign-out elsewhere is seen.

The same store keeps private apps' browser sessions and one-time links
(tidal.gateway.browser): their ids are hashed together with what they are bound to (the
app's path), so an id is valid nowhere else.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Engine, text

from tidal.control.off_loop import on_event_loop, write_later

COOKIE = "tidal_dashboard"
IDLE_SECONDS = 8 * 3600.0
MAX_SECONDS = 24 * 3600.0
# "seen" reaches the database at most this often per session (idle expiry is hours).
SEEN_WRITE_SECONDS = 60.0
# A session ended through another replica stops working here within this many seconds.
REVALIDATE_SECONDS = 5.0


@dataclass
class Session:
    key_id: str
    created: float
    seen: float
    seen_written: float
    checked_at: float  # monotonic: when the row was last read


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class SessionStore:
    def __init__(
        self,
        engine: Engine,
        idle_seconds: float = IDLE_SECONDS,
        max_seconds: float = MAX_SECONDS,
    ) -> None:
        self._engine = engine
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self._cache: dict[str, Session] = {}

    def create(self, key_id: str, bind: str = "") -> str:
        """A new session for the key `key_id`; returns the cookie's id (never stored).
        `bind` names what else it is valid for (an app's browser session: its path), so
        the same id presented elsewhere matches nothing."""
        now = time.time()
        sid = secrets.token_urlsafe(32)
        digest = _hash(bind + sid)
        with self._engine.begin() as conn:
            # Expired sessions go as new ones come: no timer needed.
            conn.execute(
                text("DELETE FROM dashboard_sessions WHERE seen_at < :idle OR created_at < :old"),
                {"idle": now - self.idle_seconds, "old": now - self.max_seconds},
            )
            conn.execute(
                text(
                    "INSERT INTO dashboard_sessions (id_hash, key_id, created_at, seen_at) "
                    "VALUES (:h, :k, :now, :now)"
                ),
                {"h": digest, "k": key_id, "now": now},
            )
        self._cache[digest] = Session(key_id, now, now, now, time.monotonic())
        return sid

    def get(self, sid: str | None, bind: str = "", load: bool | None = None) -> Session | None:
        """The live session behind a cookie's id, else None. `load` False: from what is
        cached only, the default on an event loop's thread (its caller `refresh`es in a
        thread first where `stale` says so); the writes it owes (last visit, an ended
        session) go to a thread there."""
        if not sid or len(sid) > 128:
            return None
        digest = _hash(bind + sid)
        session = self._cache.get(digest)
        if (not on_event_loop() if load is None else load) and self._stale(session):
            session = self._load(digest)
        if session is None:
            return None
        now = time.time()
        if now - session.seen > self.idle_seconds or now - session.created > self.max_seconds:
            self._cache.pop(digest, None)
            write_later(lambda: self._delete(digest), "an ended session")
            return None
        session.seen = now
        if now - session.seen_written >= SEEN_WRITE_SECONDS:
            session.seen_written = now

            def seen() -> None:
                with self._engine.begin() as conn:
                    conn.execute(
                        text("UPDATE dashboard_sessions SET seen_at = :now WHERE id_hash = :h"),
                        {"now": now, "h": digest},
                    )

            write_later(seen, "a session's last visit")
        return session

    def stale(self, sid: str | None, bind: str = "") -> bool:
        """Whether `get` would read the database for this cookie: `refresh` it in a
        thread first."""
        if not sid or len(sid) > 128:
            return False
        return self._stale(self._cache.get(_hash(bind + sid)))

    def peek(self, sid: str | None, bind: str = "") -> Session | None:
        """The cached session behind a cookie's id, as it is (no check, no read)."""
        if not sid or len(sid) > 128:
            return None
        return self._cache.get(_hash(bind + sid))

    def end_later(self, sid: str | None, bind: str = "") -> None:
        """End a session now here, its row deleted in a thread (from the event loop)."""
        if not sid:
            return
        digest = _hash(bind + sid)
        self._cache.pop(digest, None)
        write_later(lambda: self._delete(digest), "an ended session")

    def refresh(self, sid: str, bind: str = "") -> Session | None:
        """Read the session again (in a thread, for a check on the event loop)."""
        return self._load(_hash(bind + sid))

    @staticmethod
    def _stale(session: Session | None) -> bool:
        return session is None or time.monotonic() - session.checked_at > REVALIDATE_SECONDS

    def drop(self, sid: str | None, bind: str = "") -> bool:
        """End a session; True when this call ended it (a one-time link is used once)."""
        if not sid:
            return False
        digest = _hash(bind + sid)
        self._cache.pop(digest, None)
        return self._delete(digest)

    def _delete(self, digest: str) -> bool:
        with self._engine.begin() as conn:
            gone = conn.execute(
                text("DELETE FROM dashboard_sessions WHERE id_hash = :h"), {"h": digest}
            )
        return bool(gone.rowcount)

    def _load(self, digest: str) -> Session | None:
        # The cached session stays until the read is done: checks on the event loop read
        # the cache meanwhile, and a session missing there is no session (a 401, the
        # sign-in page). Dropped first, a slow read signed people out.
        with self._engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT key_id, created_at, seen_at FROM dashboard_sessions WHERE id_hash = :h"
                ),
                {"h": digest},
            ).first()
        if row is None:
            self._cache.pop(digest, None)
            return None
        key_id, created, seen = row
        session = Session(str(key_id), float(created), float(seen), float(seen), time.monotonic())
        if len(self._cache) > 10_000:  # a bound on memory, not on sessions
            self._cache.clear()
        self._cache[digest] = session
        return session


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
