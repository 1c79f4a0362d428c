"""Group commit: one thread writes for many callers, and what arrives while one
transaction commits goes into the next, so a burst of submits, claims and completions
costs a few commits, not one each, and none of it runs on the event loop.

A caller gets its operation's result only once the transaction holding it has
committed: what it then tells its own caller (a request id, "completed") is durable.
An operation that fails is retried alone, so it never takes its batch with it."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

log = logging.getLogger("tidal.queue")

T = TypeVar("T")
# Operations in one transaction at most: a commit is never held up for long.
MAX_BATCH = 256

_Op = tuple[Callable[[Connection], Any], "Future[Any]"]


class GroupCommit:
    def __init__(self, engine: Engine, name: str = "tidal-group-commit") -> None:
        self._engine = engine
        self._ops: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self.batches = 0  # transactions committed (what a test or benchmark reads)

    def submit(self, op: Callable[[Connection], T]) -> Future[T]:
        """Queue `op` for the next transaction; its future is set once that commits."""
        done: Future[T] = Future()
        self._ops.put((op, done))
        return done

    async def run(self, op: Callable[[Connection], T]) -> T:
        return await asyncio.wrap_future(self.submit(op))

    def later(self, op: Callable[[Connection], Any]) -> None:
        """Queue `op` without waiting for it; a failure is logged. Operations commit in
        the order they were queued, so a later one never lands before it."""
        self.submit(op).add_done_callback(_log_failure)

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        self._ops.put(None)
        self._thread.join(30)

    def _serve(self) -> None:
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
            self._write(batch)

    def _write(self, batch: list[_Op]) -> None:
        live = [(op, done) for op, done in batch if done.set_running_or_notify_cancel()]
        try:
            with self._engine.begin() as conn:
                results = [op(conn) for op, _ in live]
        except Exception as failed:
            if len(live) == 1:
                live[0][1].set_exception(failed)
                return
            for op, done in live:  # one failed: each alone, so only it fails
                try:
                    with self._engine.begin() as conn:
                        done.set_result(op(conn))
                except Exception as exc:
                    done.set_exception(exc)
            return
        self.batches += 1
        for (_, done), result in zip(live, results, strict=True):
            done.set_result(result)


def _log_failure(done: Future[Any]) -> None:
    if (exc := done.exception()) is not None:
        log.error("queue: a background write failed: %s", exc)
