"""A throwaway PostgreSQL server for tests and benchmarks, from Debian's `postgresql`
binaries: initdb into a temp dir, listen on a free loopback port, a fresh database
per test, everything removed at the end. Users' own tests can use it too."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidal.backends.local import free_port

# The postgres server refuses to run as root; as root we run it as this user.
SERVER_USER = "nobody"
SUPERUSER = "tidal"


class PostgresUnavailable(RuntimeError):
    pass


def find_bin_dir() -> Path:
    """Where initdb and pg_ctl are: $TIDAL_PG_BIN, Debian's newest version, or $PATH."""
    candidates = [Path(os.environ["TIDAL_PG_BIN"])] if "TIDAL_PG_BIN" in os.environ else []
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += debian
    if found := shutil.which("initdb"):
        candidates.append(Path(found).parent)
    for bin_dir in candidates:
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            return bin_dir
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl) found in /usr/lib/postgresql/*/bin "
        "or on PATH; install Debian's `postgresql` package (`make system-deps` does, as "
        "root), or point TIDAL_PG_BIN at the folder that holds them"
    )


@dataclass
class PostgresServer:
    port: int
    root: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        # FORCE: a platform's pooled connections must not keep the database alive.
        self._admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def _as_server_user(root: Path) -> dict[str, Any]:
    """subprocess arguments that run a command as the unprivileged server user (when
    we are root), with `root` owned by that user."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam(SERVER_USER)
    for path in [root, *root.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": root}


@contextlib.contextmanager
def postgres_server(durable: bool = False) -> Iterator[PostgresServer]:
    """Start a PostgreSQL server on a free port of 127.0.0.1; stop and delete it on exit.

    `durable=False` turns fsync off: tests kill platforms, never the database, and a
    2-core CI machine has better things to do than flush."""
    bin_dir = find_bin_dir()
    # Not under pytest's 0700 temp folders: the server user must be able to enter it.
    root = Path(tempfile.mkdtemp(prefix="tidal-pg-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    run_as = _as_server_user(root)
    port = free_port()
    started = False
    try:
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            check=True, capture_output=True, **run_as,
        )  # fmt: skip
        options = f"-k {sockets} -c listen_addresses=127.0.0.1 -p {port} -c max_connections=300" + (
            "" if durable else " -c fsync=off -c synchronous_commit=off"
        )
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l", str(log),
             "-o", options],
            check=True, capture_output=True, **run_as,
        )  # fmt: skip
        started = True
        yield PostgresServer(port=port, root=root)
    except subprocess.CalledProcessError as exc:
        server_log = log.read_text(errors="replace") if log.is_file() else ""
        raise PostgresUnavailable(
            f"PostgreSQL from {bin_dir} did not start: {exc.stderr.decode(errors='replace')}"
            f"{server_log}"
        ) from None
    finally:
        if started:
            subprocess.run(
                [str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w"],
                capture_output=True, **run_as,
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
