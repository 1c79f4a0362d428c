"""API keys: who may call the control-plane API (scope `admin`) and the apps (`invoke`).

A key is `<id>:<secret>`: the id (`tk_` and 12 characters) names it in lists, logs and
`tidal keys revoke`; the secret (32 random URL-safe characters, 192 bits) is shown once,
when the key is created, and only an HMAC-SHA-256 of it under a per-key random salt is
stored. A slow hash (scrypt) buys nothing for a secret this random, and verification is
on every request's path, so it must cost microseconds.

Verification keeps the few keys in use in memory (this process is the only writer of the
table, so revoking here is seen at once) and writes "last used" to the database at most
once a minute per key; `list()` shows the exact time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Float, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from tidal.control.db import Base
from tidal.control.off_loop import on_event_loop, write_later

log = logging.getLogger("tidal.keys")

ADMIN = "admin"
INVOKE = "invoke"
SCOPES = (ADMIN, INVOKE)
ID_PREFIX = "tk_"
ID_LENGTH = len(ID_PREFIX) + 12
SECRET_LENGTH = 32
MAX_NAME_LENGTH = 128
ADMIN_KEY_FILE = "admin.key"
# "last used" reaches the database at most this often per key.
LAST_USED_WRITE_SECONDS = 60.0
_ID_CHARS = frozenset("0123456789abcdef")
_SECRET_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class ApiKeyRow(Base):
    """One API key: the secret only ever as a salted hash."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(MAX_NAME_LENGTH), nullable=True)
    scope: Mapped[str] = mapped_column(String(16))
    salt: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class InvalidKeyRequest(ValueError):
    """A request to the store that cannot be done (a bad scope or name)."""


class KeyNotFound(LookupError):
    pass


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never its secret."""

    id: str
    name: str | None
    scope: str
    created_at: float
    last_used_at: float | None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
        }


@dataclass
class _Cached:
    info: KeyInfo
    salt: bytes
    digest: bytes
    last_used: float | None
    last_written: float | None
    checked_at: float = 0.0  # monotonic: when the row was last read


# A key revoked through another platform sharing the database stops working here
# within this many seconds (revoked here: at once).
REVALIDATE_SECONDS = 5.0


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


def parse_key(presented: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed `<id>:<secret>`, else None."""
    key_id, sep, secret = presented.strip().partition(":")
    if (
        not sep
        or len(key_id) != ID_LENGTH
        or not key_id.startswith(ID_PREFIX)
        or not set(key_id[len(ID_PREFIX) :]) <= _ID_CHARS
        or len(secret) != SECRET_LENGTH
        or not set(secret) <= _SECRET_CHARS
    ):
        return None
    return key_id, secret


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._cache: dict[str, _Cached] = {}

    def __repr__(self) -> str:
        return "KeyStore()"

    # -- changes ---------------------------------------------------------------------
    def create(self, scope: str = INVOKE, name: str | None = None) -> tuple[KeyInfo, str]:
        """A new key: its info and the whole key (`<id>:<secret>`), which is never
        stored nor shown again."""
        if scope not in SCOPES:
            raise InvalidKeyRequest(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if name is not None:
            name = name.strip() or None
        if name is not None and (len(name) > MAX_NAME_LENGTH or not name.isprintable()):
            raise InvalidKeyRequest(
                f"a key's name is printable text of {MAX_NAME_LENGTH} characters at most"
            )
        key_id = ID_PREFIX + secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)  # 24 bytes: 32 characters
        salt = os.urandom(16)
        now = time.time()
        with Session(self._engine) as s, s.begin():
            s.add(
                ApiKeyRow(
                    id=key_id,
                    name=name,
                    scope=scope,
                    salt=salt.hex(),
                    secret_hash=_digest(salt, secret).hex(),
                    created_at=now,
                )
            )
        info = KeyInfo(key_id, name, scope, now, None)
        log.info("created API key %s (scope %s)", key_id, scope)
        return info, f"{key_id}:{secret}"

    def revoke(self, key_id: str) -> KeyInfo:
        with Session(self._engine) as s, s.begin():
            row = s.get(ApiKeyRow, key_id)
            if row is None or row.revoked_at is not None:
                raise KeyNotFound(f"no API key {key_id!r}; see `tidal keys list`")
            row.revoked_at = time.time()
            info = self._info(row)
        self._cache.pop(key_id, None)
        log.info("revoked API key %s", key_id)
        return info

    # -- reading ---------------------------------------------------------------------
    def list(self) -> list[KeyInfo]:
        """Keys not revoked, oldest first."""
        with Session(self._engine) as s:
            rows = s.scalars(
                select(ApiKeyRow)
                .where(ApiKeyRow.revoked_at.is_(None))
                .order_by(ApiKeyRow.created_at, ApiKeyRow.id)
            ).all()
            return [self._info(r) for r in rows]

    def count(self, scope: str | None = None) -> int:
        """How many keys (of this scope) are not revoked."""
        query = select(func.count()).select_from(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None))
        if scope is not None:
            query = query.where(ApiKeyRow.scope == scope)
        with Session(self._engine) as s:
            return int(s.scalar(query) or 0)

    def verify(self, presented: str, load: bool | None = None) -> KeyInfo | None:
        """The key's info when `presented` is a key that exists and is not revoked.
        `load` False: from what is cached only, which is the default on an event loop's
        thread (its caller `refresh`es in a thread first where `stale` says so); a write
        it owes goes to a thread there."""
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        cached = self._current(key_id, load)
        if cached is None:
            _digest(b"\x00" * 16, secret)  # about the same time for an unknown id
            return None
        if not hmac.compare_digest(_digest(cached.salt, secret), cached.digest):
            return None
        self._touch(cached)
        return cached.info

    def active(self, key_id: str, load: bool | None = None) -> KeyInfo | None:
        """The info of key `key_id` while it is not revoked (a dashboard session stands for
        a key by its id, never holding the secret). `load`: as for `verify`."""
        cached = self._current(key_id, load)
        return None if cached is None else cached.info

    def stale(self, key_id: str) -> bool:
        """Whether checking key `key_id` would read the database (not cached, or cached
        longer than REVALIDATE_SECONDS ago): then `refresh` it in a thread first."""
        cached = self._cache.get(key_id)
        return cached is None or time.monotonic() - cached.checked_at > REVALIDATE_SECONDS

    def refresh(self, key_id: str) -> None:
        """Read key `key_id` again (what a check on the event loop needs, done in a
        thread); an unknown or revoked key leaves nothing cached."""
        self._load(key_id)

    # -- inside ----------------------------------------------------------------------
    def _current(self, key_id: str, load: bool | None) -> _Cached | None:
        if (not on_event_loop() if load is None else load) and self.stale(key_id):
            return self._load(key_id)
        return self._cache.get(key_id)

    def _info(self, row: ApiKeyRow) -> KeyInfo:
        cached = self._cache.get(row.id)
        last = row.last_used_at
        if cached is not None and cached.last_used is not None:
            last = max(last or 0.0, cached.last_used)
        return KeyInfo(row.id, row.name, row.scope, row.created_at, last)

    def _load(self, key_id: str) -> _Cached | None:
        # The cached entry stays until the read is done: checks on the event loop read
        # the cache meanwhile, and a key missing there is a revoked key (its dashboard
        # sessions end). Dropped first, a slow read signed people out.
        with Session(self._engine) as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None or row.revoked_at is not None:
                self._cache.pop(key_id, None)
                return None
            cached = _Cached(
                info=KeyInfo(row.id, row.name, row.scope, row.created_at, row.last_used_at),
                salt=bytes.fromhex(row.salt),
                digest=bytes.fromhex(row.secret_hash),
                last_used=row.last_used_at,
                last_written=row.last_used_at,
                checked_at=time.monotonic(),
            )
        earlier = self._cache.get(key_id)
        if earlier is not None:  # uses not yet written keep counting
            cached.last_used = max(cached.last_used or 0.0, earlier.last_used or 0.0) or None
            cached.last_written = earlier.last_written
        self._cache[key_id] = cached
        return cached

    def _touch(self, cached: _Cached) -> None:
        now = time.time()
        cached.last_used = now
        if cached.last_written is not None and now - cached.last_written < LAST_USED_WRITE_SECONDS:
            return
        cached.last_written = now
        key_id = cached.info.id

        def write() -> None:
            with Session(self._engine) as s, s.begin():
                row = s.get(ApiKeyRow, key_id)
                if row is not None:
                    row.last_used_at = now

        write_later(write, f"API key {key_id}'s last use")

    # -- the first admin key -----------------------------------------------------------
    def bootstrap(self, data_dir: Path) -> Path | None:
        """With no admin key left, create one and write it to `<data_dir>/admin.key`
        (owner-only, 0600). Returns the file's path when it did; the key itself is
        never logged."""
        if self.count(ADMIN):
            return None
        info, key = self.create(ADMIN, name="bootstrap")
        path = data_dir / ADMIN_KEY_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
            os.write(fd, (key + "\n").encode())
        finally:
            os.close(fd)
        log.warning(
            "API keys are on and no admin key existed: created admin key %s; the key is in "
            "%s (readable by this user only). Use it with `export TIDAL_KEY=$(cat %s)`.",
            info.id,
            path,
            path,
        )
        return path
