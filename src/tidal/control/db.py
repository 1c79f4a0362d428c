"""Tables and the migration path: numbered steps, applied in order, recorded in
`schema_version`, so an older data directory upgrades in place.

The database is SQLite in the data directory by default, or PostgreSQL when the
platform is given a `postgresql://` URL (several platforms can then share it). Each
step runs on both: the few types that differ come from `_Dialect`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
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
    make_url,
    text,
)
from sqlalchemy.exc import ArgumentError, OperationalError
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


@dataclass(frozen=True)
class _Dialect:
    """The DDL words that differ between SQLite and PostgreSQL; on SQLite each renders
    exactly what the step always said, so a released step's SQLite DDL never changes."""

    pk: str  # an integer primary key the database numbers itself
    seq_pk: str  # the same, never reusing a number (the queue's arrival order)
    blob: str
    false: str

    @staticmethod
    def of(conn: Connection) -> _Dialect:
        if conn.dialect.name == "postgresql":
            return _Dialect("SERIAL PRIMARY KEY", "BIGSERIAL PRIMARY KEY", "BYTEA", "FALSE")
        return _Dialect("INTEGER PRIMARY KEY", "INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB", "0")


def _v1(conn: Connection) -> None:
    d = _Dialect.of(conn)
    conn.execute(
        text(
            f"CREATE TABLE apps (id {d.pk}, owner VARCHAR(64) NOT NULL, "
            "name VARCHAR(128) NOT NULL, current_revision INTEGER NOT NULL DEFAULT 0, "
            "scaling_json TEXT NOT NULL DEFAULT '{}', created_at FLOAT NOT NULL, "
            "updated_at FLOAT NOT NULL, UNIQUE (owner, name))"
        )
    )
    conn.execute(
        text(
            f"CREATE TABLE revisions (id {d.pk}, "
            "app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE, "
            "number INTEGER NOT NULL, spec_json TEXT NOT NULL, bundle_digest VARCHAR(64) NOT NULL, "
            "created_at FLOAT NOT NULL, UNIQUE (app_id, number))"
        )
    )


def _v2(conn: Connection) -> None:
    d = _Dialect.of(conn)
    conn.execute(
        text(
            f"CREATE TABLE secrets (id {d.pk}, owner VARCHAR(64) NOT NULL, "
            f"name VARCHAR(128) NOT NULL, ciphertext {d.blob} NOT NULL, key_id VARCHAR(16) NOT NULL, "
            "created_at FLOAT NOT NULL, updated_at FLOAT NOT NULL, UNIQUE (owner, name))"
        )
    )


def _v3(conn: Connection) -> None:
    d = _Dialect.of(conn)
    # The durable queue: a request is stored here before its 2xx is returned.
    conn.execute(text(
        f"CREATE TABLE queue_requests (seq {d.seq_pk}, "
        "id VARCHAR(32) NOT NULL UNIQUE, owner VARCHAR(64) NOT NULL, app VARCHAR(128) NOT NULL, "
        "method VARCHAR(16) NOT NULL, path TEXT NOT NULL, query TEXT NOT NULL, "
        f"headers TEXT NOT NULL, body {d.blob} NOT NULL, priority INTEGER NOT NULL DEFAULT 0, "
        "status VARCHAR(16) NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
        "no_retry INTEGER NOT NULL DEFAULT 0, created_at FLOAT NOT NULL, started_at FLOAT, "
        f"completed_at FLOAT, response_status INTEGER, response_headers TEXT, response_body {d.blob}, "
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
    d = _Dialect.of(conn)
    # API keys (tidal.control.keys): the secret only as a salted HMAC-SHA-256.
    conn.execute(text(
        "CREATE TABLE api_keys (id VARCHAR(32) PRIMARY KEY, name VARCHAR(128), "
        "scope VARCHAR(16) NOT NULL, salt VARCHAR(64) NOT NULL, "
        "secret_hash VARCHAR(64) NOT NULL, created_at FLOAT NOT NULL, last_used_at FLOAT, "
        "revoked_at FLOAT)"
    ))  # fmt: skip
    # Apps are private (a key needed to call them) unless deployed public.
    conn.execute(text(f"ALTER TABLE apps ADD COLUMN public BOOLEAN NOT NULL DEFAULT {d.false}"))


def _v6(conn: Connection) -> None:
    # The platform's own record of every request it answered (tidal.observe.records), and
    # each app's runner counts over time: what the dashboard's analytics and errors read.
    # Portable SQL (SQLite and PostgreSQL): no AUTOINCREMENT, no BLOB.
    conn.execute(text(
        "CREATE TABLE request_records (id VARCHAR(32) PRIMARY KEY, owner VARCHAR(64) NOT NULL, "
        "app VARCHAR(128) NOT NULL, endpoint VARCHAR(256) NOT NULL, method VARCHAR(16) NOT NULL, "
        "kind VARCHAR(8) NOT NULL, revision INTEGER, runner_id VARCHAR(32), "
        "status_code INTEGER, error_type VARCHAR(128), error TEXT, "
        "started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION NOT NULL, "
        "latency_ms DOUBLE PRECISION NOT NULL, queue_wait_ms DOUBLE PRECISION NOT NULL, "
        "cold_start INTEGER NOT NULL DEFAULT 0, cold_start_ms DOUBLE PRECISION, "
        "cold_breakdown TEXT)"
    ))  # fmt: skip
    conn.execute(text("CREATE INDEX request_records_time ON request_records (started_at)"))
    conn.execute(text(
        "CREATE INDEX request_records_app ON request_records (owner, app, started_at)"
    ))  # fmt: skip
    conn.execute(text(
        "CREATE TABLE runner_samples (owner VARCHAR(64) NOT NULL, app VARCHAR(128) NOT NULL, "
        "ts DOUBLE PRECISION NOT NULL, pending INTEGER NOT NULL, starting INTEGER NOT NULL, "
        "ready INTEGER NOT NULL, draining INTEGER NOT NULL, in_flight INTEGER NOT NULL, "
        "waiting INTEGER NOT NULL, PRIMARY KEY (owner, app, ts))"
    ))  # fmt: skip
    conn.execute(text("CREATE INDEX runner_samples_time ON runner_samples (ts)"))


def _v7(conn: Connection) -> None:
    # Which platform holds a request in progress, and until when (its lease, renewed
    # while it runs): platforms sharing a database requeue only their own requests on
    # restart, and others' once the lease has run out (tidal.control.queue_store).
    conn.execute(text("ALTER TABLE queue_requests ADD COLUMN claimed_by VARCHAR(64)"))
    conn.execute(text("ALTER TABLE queue_requests ADD COLUMN lease_until DOUBLE PRECISION"))


def _v8(conn: Connection) -> None:
    # Dashboard sign-in sessions (tidal.dashboard.sessions): only a hash of the cookie's
    # random id, and the id of the admin key it stands for, never the key.
    conn.execute(text(
        "CREATE TABLE dashboard_sessions (id_hash VARCHAR(64) PRIMARY KEY, "
        "key_id VARCHAR(32) NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
        "seen_at DOUBLE PRECISION NOT NULL)"
    ))  # fmt: skip


def _v9(conn: Connection) -> None:
    # Finished queue results are pruned by age and per app (newest kept), in batches.
    conn.execute(text("CREATE INDEX queue_done ON queue_requests (status, completed_at)"))
    conn.execute(text(
        "CREATE INDEX queue_app_done ON queue_requests (owner, app, status, completed_at)"
    ))  # fmt: skip


def _v10(conn: Connection) -> None:
    # Positions without counting on a shared queue (tidal.control.queue_lines): each
    # app's line per priority numbers its requests, from a counter row per line.
    conn.execute(text("ALTER TABLE queue_requests ADD COLUMN line_no BIGINT"))
    conn.execute(text(
        "CREATE TABLE queue_lines (owner VARCHAR(64) NOT NULL, app VARCHAR(128) NOT NULL, "
        "priority INTEGER NOT NULL, next_no BIGINT NOT NULL, PRIMARY KEY (owner, app, priority))"
    ))  # fmt: skip
    if conn.dialect.name != "postgresql":
        return  # SQLite's one platform places requests from memory: no numbers needed
    # The requests that left their line, by number: what a position subtracts.
    conn.execute(text(
        "CREATE INDEX queue_line_left ON queue_requests (owner, app, priority, line_no) "
        "WHERE status <> 'IN_QUEUE'"
    ))  # fmt: skip
    # Requests already stored are numbered in arrival order, and their lines continue.
    conn.execute(text(
        "UPDATE queue_requests q SET line_no = r.n FROM (SELECT seq, row_number() OVER "
        "(PARTITION BY owner, app, priority ORDER BY seq) AS n FROM queue_requests) r "
        "WHERE q.seq = r.seq"
    ))  # fmt: skip
    conn.execute(text(
        "INSERT INTO queue_lines (owner, app, priority, next_no) SELECT owner, app, priority, "
        "max(line_no) FROM queue_requests GROUP BY owner, app, priority"
    ))  # fmt: skip


# Append only: a released step never changes.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9, _v10,
]  # fmt: skip


def schema_version(conn: Connection) -> int:
    conn.execute(text("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"))
    row = conn.execute(text("SELECT max(version) FROM schema_version")).scalar()
    return int(row or 0)


# Any constant of our own: platforms starting at once against one PostgreSQL database
# take turns migrating (the lock ends with the transaction).
_MIGRATION_LOCK = 0x7469_6461_6C00  # "tidal"


def migrate(engine: Engine) -> int:
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        current = schema_version(conn)
        for number, step in enumerate(MIGRATIONS[current:], start=current + 1):
            step(conn)
            conn.execute(text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": number})
        return len(MIGRATIONS)


class DatabaseError(RuntimeError):
    """The platform's database cannot be opened; the message says why and what to do."""


def database_url(target: Path | str) -> str:
    """A SQLAlchemy URL: a path is a SQLite file; `postgresql://` goes through psycopg 3."""
    if isinstance(target, Path):
        return f"sqlite:///{target}"
    for scheme in ("postgresql://", "postgres://"):
        if target.startswith(scheme):
            return "postgresql+psycopg://" + target[len(scheme) :]
    return target


def shown(url: str) -> str:
    """The URL with its password hidden, fit for logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unparsable database URL)"


def open_database(target: Path | str) -> Engine:
    """Open (and migrate) the platform's database: a SQLite file path, or a URL such
    as `postgresql://user:password@host/db`."""
    url = database_url(target)
    named = shown(str(target))
    if not url.startswith(("sqlite:", "postgresql+psycopg:")):
        raise DatabaseError(
            f"the database URL {named} is not one tidal can use; give a "
            "`postgresql://USER:PASSWORD@HOST:PORT/DB` URL, or leave `database_url` unset "
            "for SQLite in the data directory"
        )
    try:
        engine = _engine(url)
    except ArgumentError as exc:
        raise DatabaseError(
            f"the database URL {named} is not valid ({exc}); give a "
            "`postgresql://USER:PASSWORD@HOST:PORT/DB` URL"
        ) from None
    except ModuleNotFoundError:
        raise DatabaseError(
            f"the database URL {named} needs the psycopg driver, which is not installed; "
            "install it with `pip install 'tidal[postgres]'`"
        ) from None
    try:
        migrate(engine)
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        fix = (
            "Check that the data directory is writable and that no other platform uses "
            "this file (platforms that share a control plane need PostgreSQL)"
            if url.startswith("sqlite:")
            else "Check that the server is running and reachable from this host, and that "
            "the user, password and database name in the URL are right (create the "
            "database with `createdb`); or leave `database_url` unset to use SQLite in "
            "the data directory"
        )
        raise DatabaseError(
            f"cannot open the platform's database at {named}: {reason}. {fix}"
        ) from None
    return engine


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        # pool_pre_ping: a connection the server closed (restart, failover) is replaced,
        # not handed to a request.
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        # The promise is that a platform process dying (even SIGKILL) loses nothing it
        # acknowledged. In WAL mode, NORMAL keeps that: a commit is in the WAL file (the
        # OS has it) before the caller hears of it; only the OS itself crashing or power
        # failing can lose the last commits, never corrupt the file. FULL's fsync per
        # commit would cost more than the queue's whole request on a slow disk.
        cur.execute("PRAGMA synchronous=NORMAL")
        # 16 MB of pages per connection (SQLite's default is 2 MB): the queue's indexes
        # (one on random request ids) stay in memory as the table grows.
        cur.execute("PRAGMA cache_size=-16000")
        cur.close()

    return engine
