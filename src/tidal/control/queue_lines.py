"""Queue positions on a shared (PostgreSQL) queue without counting the rows ahead.

Each app's line per priority numbers its requests as they arrive (`line_no`: 1, 2, 3...
from a counter row in `queue_lines`, taken in the inserting transaction, so within a
line `line_no` follows `seq`, the claim order). A waiting request's place in its line
is then its number minus the head's, less the requests between the two that already
left the line out of turn (cancelled while waiting, or running while an earlier one
was put back): those are found through an index that holds only rows not waiting, so
a position costs a few index look-ups and one short range, O(log n), not a count of
everything ahead. Requests of lower priority numbers wait ahead of the whole line.

The one case that reads high: a request that left out of turn and was then pruned
(its result older than the retention, or beyond the per-app cap) while both ends of
the range still wait; the position is then an upper bound. Rows stored before the
numbering (no `line_no`) are counted as before until they have left.

A platform that alone uses its (SQLite) database places requests from memory
(tidal.gateway.queue_memory) and never reads this."""

from __future__ import annotations

from sqlalchemy import Connection, text

# The status literal is written into the statements (not a parameter): PostgreSQL uses
# the partial index `queue_line_left` (WHERE status <> 'IN_QUEUE') only when it can see
# that the query's condition implies the index's, which a parameter hides.
_HEAD = text(
    "SELECT line_no FROM queue_requests WHERE owner = :o AND app = :a AND priority = :p "
    "AND status = 'IN_QUEUE' ORDER BY seq LIMIT 1"
)
_TAIL = text(
    "SELECT line_no FROM queue_requests WHERE owner = :o AND app = :a AND priority = :p "
    "AND status = 'IN_QUEUE' ORDER BY seq DESC LIMIT 1"
)
_LEFT = text(
    "SELECT count(*) FROM queue_requests WHERE owner = :o AND app = :a AND priority = :p "
    "AND status <> 'IN_QUEUE' AND line_no > :lo AND line_no < :hi"
)
_COUNT = text(
    "SELECT count(*) FROM queue_requests WHERE owner = :o AND app = :a AND priority = :p "
    "AND status = 'IN_QUEUE' AND seq < :before"
)
_NEXT = text(
    "INSERT INTO queue_lines (owner, app, priority, next_no) VALUES (:o, :a, :p, 1) "
    "ON CONFLICT (owner, app, priority) DO UPDATE SET next_no = queue_lines.next_no + 1 "
    "RETURNING next_no"
)
_PRIORITIES = text(
    "SELECT priority FROM queue_lines WHERE owner = :o AND app = :a AND priority < :p"
)
# Larger than any seq: "count the whole line".
_END = 2**62


def next_line_no(conn: Connection, owner: str, app: str, priority: int) -> int:
    """The number of a request joining the line, in the inserting transaction (its
    counter row stays locked until that commits: numbers follow commit order)."""
    return int(conn.execute(_NEXT, {"o": owner, "a": app, "p": priority}).scalar_one())


def ahead_in_line(
    conn: Connection, owner: str, app: str, priority: int, line_no: int | None, seq: int
) -> int:
    """Waiting requests of this line ahead of the one numbered `line_no` (arrived as
    `seq`); `line_no` None: ahead of the line's end, i.e. all that wait in it."""
    key = {"o": owner, "a": app, "p": priority}
    head = conn.execute(_HEAD, key).first()
    if head is None:
        return 0
    if line_no is None:
        tail = conn.execute(_TAIL, key).first()
        assert tail is not None  # the line has a head
        if head.line_no is None or tail.line_no is None:
            return int(conn.execute(_COUNT, {**key, "before": _END}).scalar_one())
        lo, hi, extra = head.line_no, tail.line_no, 1
    else:
        if head.line_no is None:  # rows from before the numbering still wait
            return int(conn.execute(_COUNT, {**key, "before": seq}).scalar_one())
        lo, hi, extra = head.line_no, line_no, 0
    if hi < lo:
        return 0
    left = conn.execute(_LEFT, {**key, "lo": lo, "hi": hi}).scalar_one()
    return int(hi - lo + extra - int(left))


def position(
    conn: Connection, owner: str, app: str, priority: int, line_no: int | None, seq: int
) -> int:
    """0-based place among the app's waiting requests: every line of a lower priority
    number, then this line's requests ahead."""
    ahead = 0
    for (other,) in conn.execute(_PRIORITIES, {"o": owner, "a": app, "p": priority}).all():
        ahead += ahead_in_line(conn, owner, app, other, None, 0)
    if line_no is None:
        return ahead + int(
            conn.execute(_COUNT, {"o": owner, "a": app, "p": priority, "before": seq}).scalar_one()
        )
    return ahead + ahead_in_line(conn, owner, app, priority, line_no, seq)


def waiting(conn: Connection, owner: str, app: str) -> int:
    """How many of the app's requests wait, in every line."""
    return sum(
        ahead_in_line(conn, owner, app, p, None, 0)
        for (p,) in conn.execute(_PRIORITIES, {"o": owner, "a": app, "p": _END}).all()
    )
