"""Tables and the migration path: numbered steps, applied in order, recorded in
`schema_version`, so an older data directory upgrades in place."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import (
    Connection,
    Engine,
    ForeignKey,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class AppRow(Base):
    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    current_revision: Mapped[int] = mapped_column(default=0)
    # Options changed live with `tidal apps scale`; they override the revision's.
    scaling_json: Mapped[str] = mapped_column(Text, default="{}")
    # Callable without an API key (migration _v5).
    public: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[float] = mapped_column(default=time.time)
    updated_at: Mapped[float] = mapped_column(default=time.time)


class RevisionRow(Base):
    __tablename__ = "revisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    number: Mapped[int]
    spec_json: Mapped[str] = mapped_column(Text)
    bundle_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(default=time.time)


class SecretRow(Base):
    """One secret of one owner; the value only ever sealed (see tidal.control.secrets)."""

    __tablename__ = "secrets"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    # A format byte, the AES-GCM nonce, then the ciphertext and its tag.
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    # Which key sealed it (a fingerprint): "another key" is told apart from "damaged".
    key_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(default=time.time)
    updated_at: Mapped[float] = mapped_column(default=time.time)


def _v1(conn: Connection) -> None:
    conn.execute(
        text(
            "CREATE TABLE apps (id INTEGER PRIMARY KEY, owner VARCHAR(64) NOT NULL, "
            "name VARCHAR(128) NOT NULL, current_revision INTEGER NOT NULL DEFAULT 0, "
            "scaling_json TEXT NOT NULL DEFAULT '{}', created_at FLOAT NOT NULL, "
            "updated_at FLOAT NOT NULL, UNIQUE (owner, name))"
        )
    )
    conn.execute(
        text(
            "CREATE TABLE revisions (id INTEGER PRIMARY KEY, "
            "app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE, "
            "number INTEGER NOT NULL, spec_json TEXT NOT NULL, bundle_digest VARCHAR(64) NOT NULL, "
            "created_at FLOAT NOT NULL, UNIQUE (app_id, number))"
        )
    )


def _v2(conn: Connection) -> None:
    conn.execute(
        text(
            "CREATE TABLE secrets (id INTEGER PRIMARY KEY, owner VARCHAR(64) NOT NULL, "
            "name VARCHAR(128) NOT NULL, ciphertext BLOB NOT NULL, key_id VARCHAR(16) NOT NULL, "
            "created_at FLOAT NOT NULL, updated_at FLOAT NOT NULL, UNIQUE (owner, name))"
        )
    )


def _v3(conn: Connection) -> None:
    # The durable queue: a request is stored here before its 2xx is returned.
    conn.execute(text(
        "CREATE TABLE queue_requests (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "id VARCHAR(32) NOT NULL UNIQUE, owner VARCHAR(64) NOT NULL, app VARCHAR(128) NOT NULL, "
        "method VARCHAR(16) NOT NULL, path TEXT NOT NULL, query TEXT NOT NULL, "
        "headers TEXT NOT NULL, body BLOB NOT NULL, priority INTEGER NOT NULL DEFAULT 0, "
        "status VARCHAR(16) NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
        "no_retry INTEGER NOT NULL DEFAULT 0, created_at FLOAT NOT NULL, started_at FLOAT, "
        "completed_at FLOAT, response_status INTEGER, response_headers TEXT, response_body BLOB, "
        "error TEXT, error_type VARCHAR(64))"
    ))  # fmt: skip
    conn.execute(text(
        "CREATE INDEX queue_waiting ON queue_requests (owner, app, status, priority, seq)"
    ))  # fmt: skip


def _v4(conn: Connection) -> None:
    # Queue webhooks: the URL, and the delivery's state (attempts; "delivered" or "failed").
    conn.execute(text("ALTER TABLE queue_requests ADD COLUMN webhook_url TEXT"))
    conn.execute(text(
        "ALTER TABLE queue_requests ADD COLUMN webhook_attempts INTEGER NOT NULL DEFAULT 0"
    ))  # fmt: skip
    conn.execute(text("ALTER TABLE queue_requests ADD COLUMN webhook_state VARCHAR(16)"))


def _v5(conn: Connection) -> None:
    # API keys (tidal.control.keys): the secret only as a salted HMAC-SHA-256.
    conn.execute(text(
        "CREATE TABLE api_keys (id VARCHAR(32) PRIMARY KEY, name VARCHAR(128), "
        "scope VARCHAR(16) NOT NULL, salt VARCHAR(64) NOT NULL, "
        "secret_hash VARCHAR(64) NOT NULL, created_at FLOAT NOT NULL, last_used_at FLOAT, "
        "revoked_at FLOAT)"
    ))  # fmt: skip
    # Apps are private (a key needed to call them) unless deployed public.
    conn.execute(text("ALTER TABLE apps ADD COLUMN public BOOLEAN NOT NULL DEFAULT 0"))


# Append only: a released step never changes.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3, _v4, _v5]


def schema_version(conn: Connection) -> int:
    conn.execute(text("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"))
    row = conn.execute(text("SELECT max(version) FROM schema_version")).scalar()
    return int(row or 0)


def migrate(engine: Engine) -> int:
    with engine.begin() as conn:
        current = schema_version(conn)
        for number, step in enumerate(MIGRATIONS[current:], start=current + 1):
            step(conn)
            conn.execute(text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": number})
        return len(MIGRATIONS)


def open_database(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    migrate(engine)
    return engine
