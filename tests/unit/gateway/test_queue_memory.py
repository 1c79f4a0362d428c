"""The queue's memory (tidal.gateway.queue_memory) and its group commit
(tidal.control.group_commit), against a real SQLite database."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from tidal.control.db import open_database
from tidal.control.group_commit import GroupCommit
from tidal.control.queue_store import COMPLETED, QueueStore, new_request
from tidal.gateway import queue_memory
from tidal.gateway.queue_memory import Held, Lines
from tidal.testing import wait_for

A, B = ("local", "a"), ("local", "b")


def test_lines_keep_claim_order_and_place_by_bisection() -> None:
    lines = Lines()
    for seq in range(1, 6):
        lines.add(A, 0, seq, f"n{seq}")
    lines.add(A, 1, 6, "low")
    lines.add(A, -1, 7, "urgent")
    lines.add(B, 0, 8, "other")
    assert [lines.position(f"n{s}") for s in range(1, 6)] == [1, 2, 3, 4, 5]
    assert lines.position("urgent") == 0 and lines.position("low") == 6
    assert lines.count(A) == 7 and lines.keys() == {A, B}
    assert lines.remove("n3") and not lines.remove("n3")
    assert lines.position("n4") == 3 and lines.position("n3") is None
    assert [lines.pop(A) for _ in range(3)] == ["urgent", "n1", "n2"]
    lines.add(A, 0, 1, "n1")  # put back at its place
    assert lines.position("n1") == 0 and lines.position("low") == 3
    assert lines.drop(B) == ["other"] and lines.pop(B) is None and lines.keys() == {A}


def test_held_requests_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_memory, "HELD_BYTES", 3100)  # two of 1,512 bytes
    monkeypatch.setattr(queue_memory, "FINISHED_KEPT", 2)
    held = Held()
    items = [new_request("local", "a", "POST", "/", "", [], b"x" * 1000, 0, False)
             for _ in range(3)]  # fmt: skip
    assert held.hold(items[0]) and held.hold(items[1])
    assert not held.hold(items[2])  # past the byte budget: its place only, not its body
    assert held.get(items[2].id) is None
    for item in items:
        item.status = COMPLETED
        held.finished(item)
    assert held.get(items[0].id) is None  # only the newest two results are kept
    assert held.get(items[2].id) is items[2] and held.live(items[2].id) is None
    assert held.status(items[2].id) is items[2]
    # An older one keeps its status, without its bodies (a copy: the item is untouched).
    status = held.status(items[0].id)
    assert status is not None and status is not items[0]
    assert (status.id, status.status, status.owner, status.app) == (
        items[0].id, COMPLETED, "local", "a")  # fmt: skip
    assert status.body == b"" and status.response_body is None and items[0].body == b"x" * 1000
    held.forget_finished()
    assert held.get(items[1].id) is None and held.status(items[0].id) is None
    assert held.hold(items[0])  # the live budget was given back


def test_statuses_of_older_results_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_memory, "FINISHED_KEPT", 1)
    monkeypatch.setattr(queue_memory, "STATUS_KEPT", 2)
    held = Held()
    items = [new_request("local", "a", "GET", "/", "", [], b"", 0, False) for _ in range(4)]
    for item in items:
        item.status = COMPLETED
        held.finished(item)
    # The newest in full, the two before it as statuses, the oldest forgotten.
    assert held.get(items[3].id) is items[3]
    assert [held.status(item.id) is not None for item in items] == [False, True, True, True]
    held.finished(items[1])  # finished again (a retry elsewhere): in full, once
    assert held.get(items[1].id) is items[1] and held.get(items[3].id) is None
    assert held.status(items[3].id) is not None and held.status(items[2].id) is not None


def test_group_commit_batches_and_isolates_a_failure(tmp_path: Path) -> None:
    engine = open_database(tmp_path / "t.db")
    store = QueueStore(engine)
    writes = GroupCommit(engine)
    release = threading.Event()

    def slow(conn: Connection) -> None:
        release.wait(10)  # holds the first transaction open while the rest queue up

    def broken(conn: Connection) -> None:
        conn.execute(text("SELECT * FROM no_such_table"))

    try:
        first = writes.submit(slow)
        items = [new_request("local", "a", "POST", "/", "", [], b"{}", 0, False)
                 for _ in range(50)]  # fmt: skip
        futures = [writes.submit(lambda c, i=i: store.insert(c, i)) for i in items]
        bad = writes.submit(broken)
        release.set()
        first.result(10)
        seqs = [f.result(10) for f in futures]
        with pytest.raises(Exception, match="no_such_table"):
            bad.result(10)
        assert seqs == sorted(seqs) and len(set(seqs)) == 50
        assert writes.batches <= 3  # one for the slow op, then the queued ones together
        assert store.waiting("local", "a") == 50  # the failure took none of them along

        async def through_the_loop() -> int:
            item = new_request("local", "a", "POST", "/", "", [], b"{}", 0, False)
            return await writes.run(lambda c: store.insert(c, item))

        assert asyncio.run(through_the_loop()) > max(seqs)
    finally:
        writes.close()
        engine.dispose()


def test_group_commit_wakes_the_loop_once_per_batch(tmp_path: Path) -> None:
    """Callers on an event loop get their results (and failures) from one hop per
    batch; a caller cancelled before its transaction began has its write left out."""
    engine = open_database(tmp_path / "t.db")
    store = QueueStore(engine)
    writes = GroupCommit(engine)
    release = threading.Event()

    async def burst() -> None:
        loop = asyncio.get_running_loop()
        hops = 0
        original = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal hops
            hops += 1
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        held = asyncio.ensure_future(writes.run(lambda c: release.wait(10)))
        await asyncio.sleep(0.05)  # the first transaction is open: the rest queue up
        items = [new_request("local", "a", "POST", "/", "", [], b"{}", 0, False)
                 for _ in range(40)]  # fmt: skip
        runs = [asyncio.ensure_future(writes.run(lambda c, i=i: store.insert(c, i)))
                for i in items]  # fmt: skip
        gone = new_request("local", "a", "POST", "/", "", [], b"{}", 0, False)
        dropped = asyncio.ensure_future(writes.run(lambda c: store.insert(c, gone)))
        bad = asyncio.ensure_future(writes.run(lambda c: c.execute(text("SELECT * FROM nope"))))
        await asyncio.sleep(0)
        dropped.cancel()
        release.set()
        seqs = await asyncio.gather(*runs)
        await held
        with pytest.raises(Exception, match="nope"):
            await bad
        assert seqs == sorted(seqs) and len(set(seqs)) == 40
        assert hops <= 2  # the held transaction's, then one for the whole burst
        assert store.get(gone.id) is None and store.waiting("local", "a") == 40

    try:
        asyncio.run(burst())
    finally:
        writes.close()
        engine.dispose()


def test_a_later_write_that_fails_is_logged_and_takes_nothing_along(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = open_database(tmp_path / "t.db")
    store = QueueStore(engine)
    writes = GroupCommit(engine)
    item = new_request("local", "a", "POST", "/", "", [], b"{}", 0, False)
    try:
        writes.later(lambda c: c.execute(text("SELECT * FROM missing_table")))
        assert writes.submit(lambda c: store.insert(c, item)).result(10) > 0
    finally:
        writes.close()
        engine.dispose()
    assert store.waiting("local", "a") == 1
    assert any("missing_table" in r.getMessage() for r in caplog.records)


def _wal_frames(db: Path) -> tuple[int, int]:
    """(frames in the WAL, frames of it already copied into the database file), from
    SQLite's wal-index (the -shm file: mxFrame at byte 16, nBackfill at byte 96)."""
    shm = Path(f"{db}-shm").read_bytes()
    return int.from_bytes(shm[16:20], sys.byteorder), int.from_bytes(shm[96:100], sys.byteorder)


def test_the_writer_never_checkpoints_and_its_checkpointer_does(tmp_path: Path) -> None:
    """A WAL checkpoint syncs to disk: the writer's connection never runs one (so no
    commit waits on it); its own thread folds the WAL back instead."""
    db = tmp_path / "t.db"
    engine = open_database(db)
    store = QueueStore(engine)
    writes = GroupCommit(engine)
    try:
        level = writes.submit(
            lambda c: c.connection.driver_connection.execute(  # type: ignore[union-attr]
                "PRAGMA wal_autocheckpoint"
            ).fetchone()[0]
        )
        assert level.result(10) == 0
        items = [new_request("local", "a", "POST", "/", "", [], b"x" * 2000, 0, False)
                 for _ in range(300)]  # fmt: skip
        for f in [writes.submit(lambda c, i=i: store.insert(c, i)) for i in items]:
            f.result(10)
        wait_for(lambda: (frames := _wal_frames(db))[0] > 0 and frames[1] == frames[0],
                 timeout=30, what="the checkpointer to fold the WAL back")  # fmt: skip
    finally:
        writes.close()
        engine.dispose()
