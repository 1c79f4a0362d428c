"""The durable queue's storage, on SQLite and on PostgreSQL: order, positions, the
outcome, recovery after a restart, and (PostgreSQL) platforms sharing one queue."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, text

from tidal.control.db import open_database
from tidal.control.queue_store import COMPLETED, IN_PROGRESS, QueueStore, new_request


@pytest.fixture
def store(engine: Engine) -> QueueStore:
    return QueueStore(engine)


def submit(store: QueueStore, priority: int = 0, body: bytes = b"{}", app: str = "echo") -> str:
    return store.submit(
        "local", app, "POST", "/work", "a=1", [("content-type", "application/json")], body,
        priority, no_retry=False,
    )  # fmt: skip


def test_claims_go_by_priority_then_arrival(store: QueueStore) -> None:
    normal = [submit(store) for _ in range(3)]
    low = submit(store, priority=1)
    urgent = submit(store, priority=-1)
    submit(store, app="other")
    assert [store.position(i) for i in normal] == [1, 2, 3]
    assert store.position(urgent) == 0 and store.position(low) == 4
    assert store.waiting("local", "echo") == 5
    assert store.apps_waiting() == {("local", "echo"), ("local", "other")}
    claimed = [store.claim_next("local", "echo") for _ in range(5)]
    assert [c.id for c in claimed if c] == [urgent, *normal, low]
    assert store.claim_next("local", "echo") is None
    first = claimed[0]
    assert first is not None and first.status == IN_PROGRESS and first.attempts == 1
    assert first.headers == [("content-type", "application/json")] and first.body == b"{}"
    assert store.position(urgent) is None


def test_outcomes_are_stored_once_with_their_bytes(store: QueueStore) -> None:
    request_id = submit(store, body=b"\x00\xffbinary")
    item = store.claim_next("local", "echo")
    assert item is not None and item.body == b"\x00\xffbinary"
    assert store.complete(request_id, 200, [("x-a", "b")], b"\x00out")
    assert not store.complete(request_id, 500, [], None, "late", "cancelled")  # already done
    done = store.get(request_id)
    assert done is not None and done.status == COMPLETED
    assert (done.response_status, done.response_headers, done.response_body) == (
        200, [("x-a", "b")], b"\x00out",
    )  # fmt: skip
    assert store.purge(older_than_seconds=3600) == 0
    assert store.purge(older_than_seconds=-1) == 1 and store.get(request_id) is None


def test_recover_runs_again_once_then_fails_by_id(store: QueueStore) -> None:
    request_id = submit(store)
    assert store.claim_next("local", "echo") is not None
    assert store.recover() == (1, 0)  # the platform died mid-request: run it again
    again = store.claim_next("local", "echo")
    assert again is not None and again.attempts == 2
    assert store.recover() == (0, 1)  # attempts used up: failed, by id
    failed = store.get(request_id)
    assert failed is not None and failed.status == COMPLETED
    assert failed.error_type == "platform_restart"


def test_webhooks_owed_until_delivered(store: QueueStore) -> None:
    request_id = store.submit(
        "local", "echo", "POST", "/", "", [], b"", 0, no_retry=True,
        webhook_url="http://127.0.0.1:9/hook",
    )  # fmt: skip
    store.claim_next("local", "echo")
    store.complete(request_id, 200, [], b"ok")
    assert [r.id for r in store.webhooks_owed()] == [request_id]
    store.webhook_attempted(request_id, 1)
    store.webhook_finished(request_id, "delivered")
    assert store.webhooks_owed() == []
    item = store.get(request_id)
    assert item is not None and item.webhook_attempts == 1


def test_platforms_sharing_a_queue_never_claim_the_same_request(
    database_url: str, store: QueueStore
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several platforms share a queue on PostgreSQL only")
    ids = {submit(store) for _ in range(200)}
    # Two platforms (an engine each), each with two claiming threads, all at once.
    engines = [open_database(database_url) for _ in range(2)]
    claims: list[str] = []
    start = threading.Barrier(4)

    def drain(other: QueueStore) -> None:
        start.wait()
        # None can also mean "the rows left are being claimed this instant": ask again.
        while other.waiting("local", "echo"):
            if (item := other.claim_next("local", "echo")) is not None:
                claims.append(item.id)

    try:
        stores = [QueueStore(e) for e in engines]
        threads = [threading.Thread(target=drain, args=(s,)) for s in stores * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for e in engines:
            e.dispose()
    assert len(claims) == len(set(claims)) == 200 and set(claims) == ids
    assert store.waiting("local", "echo") == 0
    assert all(r is not None and r.status == IN_PROGRESS for r in map(store.get, ids))


def test_a_restarted_platform_requeues_only_what_it_held(engine: Engine) -> None:
    # Two platforms share the queue; "a" restarts while "b" is still running a request.
    a, b = QueueStore(engine, holder="a"), QueueStore(engine, holder="b")
    mine, theirs = submit(a), submit(a)
    assert (claimed := a.claim_next("local", "echo")) and claimed.id == mine
    assert (claimed := b.claim_next("local", "echo")) and claimed.id == theirs
    assert a.recover(restarted=True) == (1, 0)
    assert a.get(mine).status == "IN_QUEUE"  # type: ignore[union-attr]
    assert b.get(theirs).status == IN_PROGRESS  # type: ignore[union-attr]
    # b keeps renewing; a's periodic sweep leaves b's request alone.
    assert b.renew_leases() == 1
    assert a.recover(restarted=False) == (0, 0)


def test_a_lapsed_lease_puts_the_request_back_in_line(engine: Engine) -> None:
    a, b = QueueStore(engine, holder="a"), QueueStore(engine, holder="b")
    request_id = submit(b)
    assert b.claim_next("local", "echo") is not None
    with engine.begin() as conn:  # b died LEASE_SECONDS ago: nobody renewed its lease
        conn.execute(text("UPDATE queue_requests SET lease_until = lease_until - 3600"))
    assert a.recover(restarted=False) == (1, 0)
    again = a.claim_next("local", "echo")
    assert again is not None and again.id == request_id and again.attempts == 2
    assert b.renew_leases() == 0  # it is a's now


def test_a_claim_that_never_reached_a_runner_is_not_an_attempt(store: QueueStore) -> None:
    request_id = submit(store)
    assert store.claim_next("local", "echo") is not None
    store.requeue(request_id, ran=False)  # the runner's port refused the connection
    again = store.claim_next("local", "echo")
    assert again is not None and again.attempts == 1
    store.requeue(request_id)  # lost mid-request: that run counts
    again = store.claim_next("local", "echo")
    assert again is not None and again.attempts == 2


def _counted(store: QueueStore, request_id: str) -> int | None:
    """The position by counting the rows ahead: what the numbered lines must equal."""
    with store.engine.connect() as conn:
        me = conn.execute(
            text("SELECT owner, app, priority, seq, status FROM queue_requests WHERE id = :i"),
            {"i": request_id},
        ).first()
        if me is None or me.status != "IN_QUEUE":
            return None
        return int(conn.execute(
            text("SELECT count(*) FROM queue_requests WHERE owner = :o AND app = :a AND "
                 "status = 'IN_QUEUE' AND (priority < :p OR (priority = :p AND seq < :q))"),
            {"o": me.owner, "a": me.app, "p": me.priority, "q": me.seq},
        ).scalar_one())  # fmt: skip


def test_positions_stay_exact_through_cancels_requeues_and_priorities(store: QueueStore) -> None:
    ids = [submit(store, priority=i % 3 - 1) for i in range(30)]
    submit(store, app="other")  # another app's line never counts
    for request_id in ids[4:20:3]:  # cancelled while waiting, out of turn
        store.complete(request_id, None, [], None, "the request was cancelled", "request_cancelled")
    claimed = [store.claim_next("local", "echo") for _ in range(6)]
    assert all(claimed)
    store.requeue(claimed[2].id)  # type: ignore[union-attr]  # back at its place
    ids += [submit(store, priority=0) for _ in range(3)]
    waiting = [i for i in ids if _counted(store, i) is not None]
    assert sorted(_counted(store, i) for i in waiting) == list(range(len(waiting)))
    assert {i: store.position(i) for i in ids} == {i: _counted(store, i) for i in ids}
    assert store.waiting("local", "echo") == len(waiting)
    while store.claim_next("local", "echo") is not None:
        assert {i: store.position(i) for i in ids} == {i: _counted(store, i) for i in ids}
    assert store.waiting("local", "echo") == 0


def test_a_shared_queue_places_a_request_without_counting_the_line(engine: Engine) -> None:
    """On PostgreSQL, a position is a few index look-ups: no statement behind it reads
    more than a handful of rows, however deep the queue (here 3,000)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a platform alone on SQLite places requests from memory")
    from sqlalchemy import event

    store = QueueStore(engine)
    with engine.begin() as conn:
        for i in range(3000):
            store.insert(conn, new_request("local", "echo", "POST", "/", "", [], b"", i % 2, False))
    last = submit(store, priority=1)
    statements: list[tuple[str, dict[str, object]]] = []

    def seen(_conn, _cursor, statement, params, _context, _many):  # type: ignore[no-untyped-def]
        statements.append((statement, params))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert store.position(last) == 3000
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(statements) >= 4
    with engine.connect() as conn:
        for statement, params in statements:
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
            nodes = [plan.scalar_one()[0]["Plan"]]
            while nodes:
                node = nodes.pop()
                assert node["Node Type"] != "Seq Scan", statement
                assert node["Actual Rows"] <= 2, (statement, node)
                nodes += node.get("Plans", [])
