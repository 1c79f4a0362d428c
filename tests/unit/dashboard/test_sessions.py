"""Dashboard sessions in the platform's database, on SQLite and PostgreSQL: what is
stored (never the cookie's id, never the key), expiry, sign-out, and a session seen by
another store on the same database (a restarted platform, another gateway replica)."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tidal.dashboard import sessions as sessions_module
from tidal.dashboard.sessions import SessionStore, cookie_of


def rows(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT id_hash, key_id FROM dashboard_sessions")).all()
    return [(str(h), str(k)) for h, k in found]


def test_a_session_is_stored_as_a_hash_and_known_to_every_store(engine: Engine) -> None:
    store = SessionStore(engine)
    sid = store.create("tk_0123456789ab")
    assert rows(engine) == [(hashlib.sha256(sid.encode()).hexdigest(), "tk_0123456789ab")]
    session = store.get(sid)
    assert session is not None and session.key_id == "tk_0123456789ab"
    # A restarted platform, or another replica on the same database, knows it too.
    other = SessionStore(engine)
    found = other.get(sid)
    assert found is not None and found.key_id == "tk_0123456789ab"
    for wrong in ("", None, sid[:-1], "x" * 500):
        assert other.get(wrong) is None


def test_sign_out_elsewhere_is_seen_after_the_cache(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = SessionStore(engine), SessionStore(engine)
    sid = here.create("tk_0123456789ab")
    assert there.get(sid) is not None
    here.drop(sid)
    assert here.get(sid) is None and rows(engine) == []
    monkeypatch.setattr(sessions_module, "REVALIDATE_SECONDS", 0.0)
    assert there.get(sid) is None


def test_idle_and_old_sessions_end_and_are_deleted(engine: Engine) -> None:
    store = SessionStore(engine, idle_seconds=0.2, max_seconds=3600)
    idle = store.create("tk_0123456789ab")
    time.sleep(0.3)
    assert store.get(idle) is None and rows(engine) == []
    short = SessionStore(engine, idle_seconds=3600, max_seconds=0.2)
    old = short.create("tk_0123456789ab")
    stale = short.create("tk_0123456789ab")
    time.sleep(0.3)
    assert short.get(old) is None
    short.create("tk_0123456789ab")  # expired rows go as new sessions come
    assert len(rows(engine)) == 1 and short.get(stale) is None


def test_cookie_of_reads_only_the_dashboard_cookie() -> None:
    headers = [(b"Cookie", b"other=1; tidal_dashboard=abc; x=2")]
    assert cookie_of(headers) == "abc"
    assert cookie_of([(b"cookie", b"tidal_dashboard=")]) is None
    assert cookie_of([]) is None


def test_a_session_read_again_stays_valid_while_it_is_read(
    engine: Engine, hold_statements: Any
) -> None:
    """Checks on the event loop read the cache while a thread reads the session again:
    it stays there meanwhile. Dropped first, a session read slowly (under load) was
    missing for that moment: a 401, and the page went to the sign-in form."""
    store = SessionStore(engine)
    sid = store.create("tk_0123456789ab")
    reader = threading.Thread(target=store.refresh, args=(sid,), name="session-refresh")
    with hold_statements("session-refresh") as held:
        reader.start()
        assert held.wait(10)
        assert store.get(sid, load=False) is not None
    reader.join(10)
    assert store.get(sid, load=False) is not None
    store.drop(sid)
    store.refresh(sid)  # a session gone from the database is gone from the cache
    assert store.get(sid, load=False) is None
