"""Telling the other platforms on a shared PostgreSQL database that apps changed.

Every change to the apps' table (deploy, scale, rollback, delete) sends a NOTIFY on
one channel inside its transaction, so it is delivered only if the change commits.
Each platform keeps one extra connection LISTENing (a thread: psycopg's blocking
notifies() loop) and re-reads the apps as soon as a notification arrives. Polling
(`registry_poll_seconds`) stays underneath: a notification missed while the listener
reconnected is picked up by the next poll. SQLite has a single platform: nothing to do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

log = logging.getLogger("tidal.changes")

CHANNEL = "tidal_apps"
RECONNECT_SECONDS = 1.0


def announce(conn: Connection) -> None:
    """Within the transaction that changes apps: others hear of it once it commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


class ChangeListener:
    """Calls `on_change` (from its own thread) when another platform changed apps."""

    def __init__(self, engine: Engine, on_change: Callable[[], object]) -> None:
        # A connection of its own, outside the pool: it stays in LISTEN for good.
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tidal-changes", daemon=True)
        self.listening = threading.Event()  # set once LISTEN is in place (tests wait on it)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self._on_change()  # whatever changed while not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._on_change()
            except Exception as exc:  # the database away for a moment: polling covers it
                self.listening.clear()
                log.warning("listening for app changes failed (%s); retrying", exc)
                self._stop.wait(RECONNECT_SECONDS)
