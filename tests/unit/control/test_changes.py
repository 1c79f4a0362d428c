"""App changes announced on PostgreSQL (NOTIFY in the changing transaction) and heard
by another platform's listener; nothing for a change that did not happen."""

from __future__ import annotations

import threading

import pytest

from tidal.control.changes import ChangeListener
from tidal.control.db import open_database
from tidal.control.registry import NotFound, Registry
from tidal.spec import AppSpec
from tidal.testing_postgres import PostgresServer

SPEC = AppSpec(name="hello", entry="app.py::hello", kind="function", bundle_digest="0" * 64)


def test_a_change_committed_elsewhere_is_heard(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    here, there = open_database(url), open_database(url)
    heard = threading.Semaphore(0)
    listener = ChangeListener(here, heard.release)
    listener.start()
    try:
        assert listener.listening.wait(30)
        assert heard.acquire(timeout=5)  # one at the start: whatever changed before
        registry = Registry(there)
        registry.deploy("local", SPEC)
        assert heard.acquire(timeout=10)
        registry.scale("local", "hello", {"keep_alive": 5})
        assert heard.acquire(timeout=10)
        with pytest.raises(NotFound):  # a change that did not happen announces nothing
            registry.delete("local", "nothing-here")
        registry.delete("local", "hello")
        assert heard.acquire(timeout=10)
        assert not heard.acquire(timeout=1.0)
    finally:
        listener.stop()
        here.dispose()
        there.dispose()
        postgres.drop_database(url)
