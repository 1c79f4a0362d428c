"""Group commit: one thread writes for many callers, and what arrives while one
transaction commits goes into the next, so a burst of submits, claims and completions
costs a few commits, not one each, and none of it runs on the event loop.

A caller gets its operation's result only once the transaction holding it has
committed: what it then tells its own caller (a request id, "completed") is durable.
An operation that fails is retried alone, so it never takes its batch with it.

The callers on an event loop are told of a batch's results in one hop onto that loop
(not one per operation): under load a batch holds tens of operations, and a hop each
cost more of the loop's time than the operations themselves.

On SQLite the writer keeps one connection and never checkpoints the WAL itself: a
checkpoint syncs the WAL and the database file to disk, and run by the committing
connection (SQLite's automatic checkpoint, every 1,000 pages: about once a second
under load) it held every submit and completion queued behind it for 0.3-1.7 s on a
busy disk (measured). A checkpointer thread of its own folds the WAL back every
CHECKPOINT_SECONDS instead (PASSIVE: it never blocks a writer); a commit is in the WAL
before anyone hears of it either way, so nothing acknowledged depends on it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

log = logging.getLogger("tidal.queue")

T = TypeVar("T")
# Operations in one transaction at most: a commit is never held up for long.
MAX_BATCH = 256
# How often the checkpointer folds the WAL back into the database file (SQLite).
CHECKPOINT_SECONDS = 0.5

# A caller waiting in a thread (a concurrent Future), on an event loop (its loop's
# Future, settled on that loop), or none (later(): a failure is logged).
_Done = Future[Any] | asyncio.Future[Any] | None
_Op = tuple[Callable[[Connection], Any], _Done]
# What an operation came to: (its caller, its result, or the exception it raised).
_Outcome = tuple[_Done, Any, BaseException | None]


class GroupCommit:
    def __init__(self, engine: Engine, name: str = "tidal-group-commit") -> None:
        self._engine = engine
        self._ops: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._sqlite = engine.dialect.name == "sqlite"
        self._conn: Connection | None = None  # the writer's own, on SQLite
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self._checkpointer: threading.Thread | None = None
        if self._sqlite:
            self._checkpointer = threading.Thread(
                target=self._checkpoint, name=f"{name}-checkpoint", daemon=True
            )
            self._checkpointer.start()
        self.batches = 0  # transactions committed (what a test or benchmark reads)

    def submit(self, op: Callable[[Connection], T]) -> Future[T]:
        """Queue `op` for the next transaction; its future is set once that commits."""
        done: Future[T] = Future()
        self._ops.put((op, done))
        return done

    async def run(self, op: Callable[[Connection], T]) -> T:
        """`op`'s result once its transaction committed. A caller cancelled before the
        transaction began has its operation left out of it."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._ops.put((op, done))
        return await done

    def later(self, op: Callable[[Connection], Any]) -> None:
        """Queue `op` without waiting for it; a failure is logged. Operations commit in
        the order they were queued, so a later one never lands before it."""
        self._ops.put((op, None))

    def close(self) -> None:
        """Write what is queued, then stop the threads."""
        self._ops.put(None)
        self._thread.join(30)
        self._stopping.set()
        if self._checkpointer is not None:
            self._checkpointer.join(30)

    def _serve(self) -> None:
        if self._sqlite:
            self._conn = self._engine.connect()
            _driver(self._conn).execute("PRAGMA wal_autocheckpoint=0")  # see the module's doc
        try:
            self._serve_batches()
        finally:
            if self._conn is not None:
                self._conn.close()

    def _checkpoint(self) -> None:
        with self._engine.connect() as conn:
            driver = _driver(conn)
            while not self._stopping.wait(CHECKPOINT_SECONDS):
                try:
                    driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except Exception as exc:  # busy or away for a moment: next time
                    log.warning("queue: checkpointing the database's WAL failed: %s", exc)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        if self._conn is None:
            with self._engine.begin() as conn:
                yield conn
        else:
            with self._conn.begin():
                yield self._conn

    def _serve_batches(self) -> None:
        stop = False
        while not stop:
            first = self._ops.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    more = self._ops.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            _tell(self._write(batch))

    def _write(self, batch: list[_Op]) -> list[_Outcome]:
        live = [(op, done) for op, done in batch if _still_wanted(done)]
        try:
            with self._transaction() as conn:
                results = [op(conn) for op, _ in live]
        except Exception as failed:
            if len(live) == 1:
                return [(live[0][1], None, failed)]
            alone: list[_Outcome] = []
            for op, done in live:  # one failed: each alone, so only it fails
                try:
                    with self._transaction() as conn:
                        alone.append((done, op(conn), None))
                except Exception as exc:
                    alone.append((done, None, exc))
            return alone
        self.batches += 1
        return [(done, result, None) for (_, done), result in zip(live, results, strict=True)]


def _driver(conn: Connection) -> Any:
    """The DB-API connection under `conn` (sqlite3's)."""
    return conn.connection.driver_connection


def _still_wanted(done: _Done) -> bool:
    if done is None:
        return True
    if isinstance(done, Future):
        return done.set_running_or_notify_cancel()
    # Read from this thread: at worst a caller cancelled this instant has its write
    # done anyway, which is what a cancel racing a commit means in any case.
    return not done.cancelled()


def _tell(outcomes: list[_Outcome]) -> None:
    """Settle each caller: threads' futures here, each loop's in one call on it."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        done, result, exc = outcome
        if done is None:
            if exc is not None:
                log.error("queue: a background write failed: %s", exc)
        elif isinstance(done, Future):
            if exc is None:
                done.set_result(result)
            else:
                done.set_exception(exc)
        else:
            by_loop.setdefault(done.get_loop(), []).append(outcome)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: no one is left to tell
            loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[_Outcome]) -> None:
    for done, result, exc in outcomes:
        assert isinstance(done, asyncio.Future)
        if done.done():  # cancelled while it was written
            continue
        if exc is None:
            done.set_result(result)
        else:
            done.set_exception(exc)
