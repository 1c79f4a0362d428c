"""The durable queue's storage: every queued request is a row, written before the
caller gets its 2xx, so a platform restart loses nothing."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, TextClause, text

from tidal.control import queue_lines

IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"
# A request in progress when the platform died is run again this many times in all.
MAX_ATTEMPTS = 2
# A request whose runner died under it (its connection lost mid-request) is run at
# most this many times in all; a node failure can take more than one runner.
RUNNER_LOSS_ATTEMPTS = 3
# A platform renews the leases of the requests it runs every LEASE_SECONDS / 3; one
# that stops renewing (it died) loses them, and any platform sharing the queue puts
# them back in line.
LEASE_SECONDS = 30.0
# Results forgotten per transaction: pruning never holds the database for long.
PURGE_BATCH = 500


# The statements of the queue's hot path, built once (building a text() clause parses it:
# that alone cost more than SQLite's whole insert when done per request).
_INSERT = text(
    "INSERT INTO queue_requests (id, owner, app, method, path, query, headers, body, "
    "priority, status, no_retry, created_at, webhook_url) VALUES (:id, :owner, :app, "
    ":method, :path, :query, :headers, :body, :priority, :status, :no_retry, :now, "
    ":webhook_url) RETURNING seq"
)
# A shared queue's insert also numbers the request in its line (queue_lines).
_INSERT_NUMBERED = text(
    "INSERT INTO queue_requests (id, owner, app, method, path, query, headers, body, "
    "priority, status, no_retry, created_at, webhook_url, line_no) VALUES (:id, :owner, "
    ":app, :method, :path, :query, :headers, :body, :priority, :status, :no_retry, :now, "
    ":webhook_url, :line_no) RETURNING seq"
)
_MARK_CLAIMED = text(
    "UPDATE queue_requests SET status = :p, started_at = :now, attempts = attempts + 1, "
    "claimed_by = :h, lease_until = :until WHERE id = :id AND status = :q"
)
_COMPLETE = text(
    "UPDATE queue_requests SET status = :s, completed_at = :now, response_status = :rs, "
    "response_headers = :rh, response_body = :rb, error = :e, error_type = :et "
    "WHERE id = :id AND status != :s"
)
_REQUEUE = text(
    "UPDATE queue_requests SET status = :s, claimed_by = NULL, lease_until = NULL, "
    "attempts = attempts - :refund WHERE id = :id"
)
_GET = text("SELECT * FROM queue_requests WHERE id = :id")


def _hot(conn: Connection, statement: TextClause, params: dict[str, Any]) -> Any:
    """Run one of the hot path's statements in the caller's transaction; a cursor-like
    result (rowcount, first()/fetchone()). On SQLite it goes straight to the driver's
    connection (same connection, same transaction): SQLAlchemy's execution path cost
    several times the statement itself (profiled under the queue benchmark)."""
    if conn.dialect.name == "sqlite":
        return conn.connection.driver_connection.execute(statement.text, params)  # type: ignore[union-attr]
    return conn.execute(statement, params)


@dataclass
class QueuedRequest:
    id: str
    owner: str
    app: str
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    status: str
    attempts: int
    created_at: float
    started_at: float | None
    completed_at: float | None
    response_status: int | None
    response_headers: list[tuple[str, str]]
    response_body: bytes | None
    error: str | None
    error_type: str | None
    webhook_url: str | None = None
    webhook_attempts: int = 0
    no_retry: bool = False  # x-fal-no-retry: run at most once
    priority: int = 0  # claims go by (priority, seq): lower first
    seq: int = 0  # arrival order, numbered by the database

    @property
    def size(self) -> int:
        """Bytes it holds in memory, roughly (bodies dominate)."""
        return len(self.body) + len(self.response_body or b"") + 512

    @classmethod
    def from_row(cls, row: Any) -> QueuedRequest:
        m = row._mapping
        return cls(
            id=m["id"], owner=m["owner"], app=m["app"], method=m["method"], path=m["path"],
            query=m["query"], headers=[tuple(h) for h in json.loads(m["headers"])],
            body=bytes(m["body"]), status=m["status"], attempts=m["attempts"],
            created_at=m["created_at"], started_at=m["started_at"],
            completed_at=m["completed_at"], response_status=m["response_status"],
            response_headers=[tuple(h) for h in json.loads(m["response_headers"] or "[]")],
            response_body=None if m["response_body"] is None else bytes(m["response_body"]),
            error=m["error"], error_type=m["error_type"], webhook_url=m["webhook_url"],
            webhook_attempts=m["webhook_attempts"], no_retry=bool(m["no_retry"]),
            priority=m["priority"], seq=m["seq"],
        )  # fmt: skip


class _Ids:
    """Request ids: 128 random bits in hex, like uuid4().hex, read from the OS's
    randomness 256 at a time (a system call per id costs more than the rest of a
    submit on a busy host)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self._at = 0

    def next(self) -> str:
        with self._lock:
            if self._at >= len(self._buf):
                self._buf, self._at = os.urandom(4096), 0
            chunk = self._buf[self._at : self._at + 16]
            self._at += 16
        return chunk.hex()


_ids = _Ids()


def new_request(
    owner: str, app: str, method: str, path: str, query: str, headers: list[tuple[str, str]],
    body: bytes, priority: int, no_retry: bool, webhook_url: str | None = None,
) -> QueuedRequest:  # fmt: skip
    """A request about to be stored (its seq comes with the insert)."""
    return QueuedRequest(
        id=_ids.next(), owner=owner, app=app, method=method, path=path, query=query,
        headers=headers, body=body, status=IN_QUEUE, attempts=0, created_at=time.time(),
        started_at=None, completed_at=None, response_status=None, response_headers=[],
        response_body=None, error=None, error_type=None, webhook_url=webhook_url,
        no_retry=no_retry, priority=priority,
    )  # fmt: skip


class QueueStore:
    def __init__(self, engine: Engine, holder: str = "local") -> None:
        self._engine = engine
        # This platform's name in `claimed_by` (stable across its restarts).
        self.holder = holder
        # Platforms may share the queue (PostgreSQL): this one's memory is then not the
        # whole queue, and claims and positions come from the database.
        self.shared = engine.dialect.name == "postgresql"
        self._lock = threading.Lock()  # one claim at a time: positions stay exact

    @property
    def engine(self) -> Engine:
        return self._engine

    def submit(
        self, owner: str, app: str, method: str, path: str, query: str,
        headers: list[tuple[str, str]], body: bytes, priority: int, no_retry: bool,
        webhook_url: str | None = None,
    ) -> str:  # fmt: skip
        item = new_request(owner, app, method, path, query, headers, body, priority, no_retry,
                           webhook_url)  # fmt: skip
        with self._engine.begin() as conn:
            self.insert(conn, item)
        return item.id

    def insert(self, conn: Connection, item: QueuedRequest) -> int:
        """Store a new request (in the caller's transaction); its seq, also set on it.
        On a shared queue it is numbered in its line first (positions: queue_lines)."""
        params = {
            "id": item.id, "owner": item.owner, "app": item.app, "method": item.method,
            "path": item.path, "query": item.query, "headers": json.dumps(item.headers),
            "body": item.body, "priority": item.priority, "status": IN_QUEUE,
            "no_retry": int(item.no_retry), "now": item.created_at,
            "webhook_url": item.webhook_url,
        }  # fmt: skip
        if self.shared:
            params["line_no"] = queue_lines.next_line_no(conn, item.owner, item.app, item.priority)
            item.seq = int(conn.execute(_INSERT_NUMBERED, params).scalar_one())
            return item.seq
        item.seq = int(_hot(conn, _INSERT, params).fetchall()[0][0])
        return item.seq

    def mark_claimed(self, conn: Connection, request_id: str, now: float) -> bool:
        """A waiting request this platform handed to a slot from memory: in progress,
        one attempt more, held under this platform's lease. False if it was not
        waiting (cancelled, or another platform's claim came first)."""
        return bool(_hot(
            conn,
            _MARK_CLAIMED,
            {"p": IN_PROGRESS, "q": IN_QUEUE, "now": now, "id": request_id, "h": self.holder,
             "until": now + LEASE_SECONDS},
        ).rowcount)  # fmt: skip

    def waiting_lines(self) -> list[tuple[str, str, int, int, str]]:
        """Every waiting request as (owner, app, priority, seq, id): what a platform
        that alone uses the database keeps in memory to hand out and to place."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                text("SELECT owner, app, priority, seq, id FROM queue_requests WHERE status = :q"),
                {"q": IN_QUEUE},
            ).all()
        return [(r.owner, r.app, r.priority, r.seq, r.id) for r in rows]

    def end_app(self, conn: Connection, owner: str, app: str, error: str) -> list[QueuedRequest]:
        """Complete every waiting request of an app that is gone (`app_deleted`); the
        requests so ended, as they now are."""
        rows = conn.execute(
            text("SELECT * FROM queue_requests WHERE owner = :o AND app = :a AND status = :q"),
            {"o": owner, "a": app, "q": IN_QUEUE},
        ).all()
        now = time.time()
        conn.execute(
            text(
                "UPDATE queue_requests SET status = :c, completed_at = :now, error = :e, "
                "error_type = 'app_deleted' WHERE owner = :o AND app = :a AND status = :q"
            ),
            {"c": COMPLETED, "now": now, "e": error, "o": owner, "a": app, "q": IN_QUEUE},
        )
        ended = [QueuedRequest.from_row(r) for r in rows]
        for item in ended:
            item.status, item.completed_at = COMPLETED, now
            item.error, item.error_type = error, "app_deleted"
        return ended

    def get(self, request_id: str) -> QueuedRequest | None:
        with self._engine.connect() as conn:
            row = conn.execute(_GET, {"id": request_id}).first()
        return None if row is None else QueuedRequest.from_row(row)

    def position(self, request_id: str) -> int | None:
        """0-based place among the app's waiting requests (priority, then arrival). On
        a shared queue from the lines' numbers, O(log n) (queue_lines); otherwise a count
        (a platform alone places requests from memory and does not ask this)."""
        with self._engine.connect() as conn:
            me = conn.execute(
                text(
                    "SELECT owner, app, priority, seq, status, line_no FROM queue_requests "
                    "WHERE id = :id"
                ),
                {"id": request_id},
            ).first()
            if me is None or me.status != IN_QUEUE:
                return None
            if self.shared:
                return queue_lines.position(conn, me.owner, me.app, me.priority, me.line_no, me.seq)
            ahead = conn.execute(
                text(
                    "SELECT count(*) FROM queue_requests WHERE owner = :o AND app = :a AND "
                    "status = :s AND (priority < :p OR (priority = :p AND seq < :q))"
                ),
                {"o": me.owner, "a": me.app, "s": IN_QUEUE, "p": me.priority, "q": me.seq},
            ).scalar()
        return int(ahead or 0)

    def waiting(self, owner: str, app: str) -> int:
        with self._engine.connect() as conn:
            if self.shared:
                return queue_lines.waiting(conn, owner, app)
            count = conn.execute(
                text(
                    "SELECT count(*) FROM queue_requests WHERE owner = :o AND app = :a "
                    "AND status = :s"
                ),
                {"o": owner, "a": app, "s": IN_QUEUE},
            ).scalar()
        return int(count or 0)

    def apps_waiting(self) -> set[tuple[str, str]]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                text("SELECT DISTINCT owner, app FROM queue_requests WHERE status = :s"),
                {"s": IN_QUEUE},
            ).all()
        return {(r.owner, r.app) for r in rows}

    def claim_next(self, owner: str, app: str) -> QueuedRequest | None:
        if self.shared:
            return self._claim_shared(owner, app)
        with self._lock, self._engine.begin() as conn:
            row = conn.execute(
                text(
                    "SELECT id FROM queue_requests WHERE owner = :o AND app = :a AND status = :s "
                    "ORDER BY priority, seq LIMIT 1"
                ),
                {"o": owner, "a": app, "s": IN_QUEUE},
            ).first()
            if row is None:
                return None
            now = time.time()
            conn.execute(
                text(
                    "UPDATE queue_requests SET status = :s, started_at = :now, "
                    "attempts = attempts + 1, claimed_by = :h, lease_until = :until "
                    "WHERE id = :id"
                ),
                {"s": IN_PROGRESS, "now": now, "id": row.id, "h": self.holder,
                 "until": now + LEASE_SECONDS},
            )  # fmt: skip
        return self.get(row.id)

    def _claim_shared(self, owner: str, app: str) -> QueuedRequest | None:
        """PostgreSQL, where several platforms may share the queue: one statement
        locks the first waiting row, skipping rows another platform is claiming this
        instant, and marks it; no request is claimed twice."""
        now = time.time()
        with self._lock, self._engine.begin() as conn:
            row = conn.execute(
                text(
                    "UPDATE queue_requests SET status = :p, started_at = :now, "
                    "attempts = attempts + 1, claimed_by = :h, lease_until = :until "
                    "WHERE seq = (SELECT seq FROM queue_requests "
                    "WHERE owner = :o AND app = :a AND status = :q ORDER BY priority, seq "
                    "LIMIT 1 FOR UPDATE SKIP LOCKED) AND status = :q RETURNING *"
                ),
                {"o": owner, "a": app, "q": IN_QUEUE, "p": IN_PROGRESS, "now": now,
                 "h": self.holder, "until": now + LEASE_SECONDS},
            ).first()  # fmt: skip
        return None if row is None else QueuedRequest.from_row(row)

    def purge(self, older_than_seconds: float, batch: int = PURGE_BATCH) -> int:
        """Forget up to `batch` results completed longer ago than the retention time
        (the caller repeats while a full batch went): a short transaction each."""
        with self._engine.begin() as conn:
            return int(conn.execute(
                text("DELETE FROM queue_requests WHERE seq IN (SELECT seq FROM queue_requests "
                     "WHERE status = :c AND completed_at < :t LIMIT :n)"),
                {"c": COMPLETED, "t": time.time() - older_than_seconds, "n": batch},
            ).rowcount)  # fmt: skip

    def over_cap(self, keep: int) -> list[tuple[str, str]]:
        """Apps holding more than `keep` finished results."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                text("SELECT owner, app FROM queue_requests WHERE status = :c "
                     "GROUP BY owner, app HAVING count(*) > :k"),
                {"c": COMPLETED, "k": keep},
            ).all()  # fmt: skip
        return [(r.owner, r.app) for r in rows]

    def trim(self, owner: str, app: str, keep: int, batch: int = PURGE_BATCH) -> int:
        """Forget up to `batch` of the app's oldest results beyond its newest `keep`."""
        with self._engine.begin() as conn:
            cut = conn.execute(
                text("SELECT completed_at FROM queue_requests WHERE owner = :o AND app = :a "
                     "AND status = :c ORDER BY completed_at DESC LIMIT 1 OFFSET :k"),
                {"o": owner, "a": app, "c": COMPLETED, "k": keep},
            ).scalar()  # fmt: skip
            if cut is None:
                return 0
            return int(conn.execute(
                text("DELETE FROM queue_requests WHERE seq IN (SELECT seq FROM queue_requests "
                     "WHERE owner = :o AND app = :a AND status = :c AND completed_at <= :t "
                     "LIMIT :n)"),
                {"o": owner, "a": app, "c": COMPLETED, "t": cut, "n": batch},
            ).rowcount)  # fmt: skip

    def requeue(self, request_id: str, ran: bool = True) -> None:
        """Back in line at its place. `ran=False`: it never reached a runner, so the
        claim does not count as an attempt."""
        with self._engine.begin() as conn:
            self.requeue_in(conn, request_id, ran)

    def requeue_in(self, conn: Connection, request_id: str, ran: bool = True) -> None:
        _hot(conn, _REQUEUE, {"s": IN_QUEUE, "id": request_id, "refund": 0 if ran else 1})

    def complete(
        self, request_id: str, status: int | None, headers: list[tuple[str, str]],
        body: bytes | None, error: str | None = None, error_type: str | None = None,
    ) -> bool:  # fmt: skip
        """Record the outcome; False when it was already complete (e.g. cancelled)."""
        with self._engine.begin() as conn:
            return self.complete_in(
                conn, request_id, status, headers, body, error, error_type, time.time()
            )

    def complete_in(
        self, conn: Connection, request_id: str, status: int | None,
        headers: list[tuple[str, str]], body: bytes | None, error: str | None,
        error_type: str | None, now: float,
    ) -> bool:  # fmt: skip
        done = _hot(
            conn,
            _COMPLETE,
            {"s": COMPLETED, "now": now, "rs": status, "rh": json.dumps(headers),
             "rb": body, "e": error, "et": error_type, "id": request_id},
        )  # fmt: skip
        return bool(done.rowcount)

    def recover(self, restarted: bool = True) -> tuple[int, int]:
        """Requests in progress on a platform that died run again (at least once), or
        fail by id where they ran out of attempts or opted out of retries. `restarted`:
        this platform just started, so what it held before is orphaned too; otherwise
        only requests whose lease ran out (another platform stopped renewing)."""
        lost = "lease_until < :now"
        if restarted:
            lost = f"(claimed_by = :h OR claimed_by IS NULL OR {lost})"
        params = {"q": IN_QUEUE, "p": IN_PROGRESS, "max": MAX_ATTEMPTS, "now": time.time(),
                  "h": self.holder}  # fmt: skip
        with self._engine.begin() as conn:
            retried = conn.execute(
                text(
                    "UPDATE queue_requests SET status = :q, claimed_by = NULL, "
                    f"lease_until = NULL WHERE status = :p AND {lost} "
                    "AND attempts < :max AND no_retry = 0"
                ),
                params,
            ).rowcount
            failed = conn.execute(
                text(
                    "UPDATE queue_requests SET status = :c, completed_at = :now, "
                    f"error = :e, error_type = 'platform_restart' WHERE status = :p AND {lost}"
                ),
                {**params, "c": COMPLETED,
                 "e": "the platform running this request stopped before it finished; it "
                      "was not retried (no retries asked for, or attempts used up)"},
            ).rowcount  # fmt: skip
        return retried, failed

    def renew_leases(self) -> int:
        """Extend the leases of the requests this platform is running."""
        with self._engine.begin() as conn:
            return int(conn.execute(
                text("UPDATE queue_requests SET lease_until = :until WHERE claimed_by = :h "
                     "AND status = :p"),
                {"until": time.time() + LEASE_SECONDS, "h": self.holder, "p": IN_PROGRESS},
            ).rowcount)  # fmt: skip

    # Webhook delivery state: attempts made, then "delivered" or "failed" (given up).

    def webhook_attempted(self, request_id: str, attempts: int) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                text("UPDATE queue_requests SET webhook_attempts = :n WHERE id = :id"),
                {"n": attempts, "id": request_id},
            )

    def webhook_finished(self, request_id: str, state: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                text("UPDATE queue_requests SET webhook_state = :s WHERE id = :id"),
                {"s": state, "id": request_id},
            )

    def webhooks_owed(self) -> list[QueuedRequest]:
        """Completed requests whose webhook was neither delivered nor given up on."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT * FROM queue_requests WHERE status = :c AND webhook_url IS NOT NULL "
                    "AND webhook_state IS NULL ORDER BY seq"
                ),
                {"c": COMPLETED},
            ).all()
        return [QueuedRequest.from_row(r) for r in rows]
