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

# One statement per line, so that the head, the end and what left between are read in
# one snapshot while other platforms claim. The status literal is written into them (not
# a parameter): PostgreSQL uses the partial index `queue_line_left` (WHERE status <>
# 'IN_QUEUE') only when it can see that the query's condition implies the index's.
_WAITING = "owner = :o AND app = :a AND priority = :p AND status = 'IN_QUEUE'"
_LEFT = (
    "(SELECT count(*) FROM queue_requests WHERE owner = :o AND app = :a AND priority = :p "
    "AND status <> 'IN_QUEUE' AND line_no > h.line_no AND line_no < {hi})"
)
# (head's number, the end's number, left between) of a line; no row when none waits.
_WHOLE_LINE = text(
    f"WITH h AS (SELECT line_no FROM queue_requests WHERE {_WAITING} ORDER BY seq LIMIT 1), "
    f"t AS (SELECT line_no FROM queue_requests WHERE {_WAITING} ORDER BY seq DESC LIMIT 1) "
    f"SELECT h.line_no AS lo, t.line_no AS hi, {_LEFT.format(hi='t.line_no')} AS left_ "
    "FROM h, t"
)
# (head's number, :me, left between): the line up to the request numbered :me.
_UP_TO = text(
    f"WITH h AS (SELECT line_no FROM queue_requests WHERE {_WAITING} ORDER BY seq LIMIT 1) "
    f"SELECT h.line_no AS lo, :me AS hi, {_LEFT.format(hi=':me')} AS left_ FROM h"
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
    `seq`); `line_no` None: all that wait in it."""
    key = {"o": owner, "a": app, "p": priority}
    if line_no is None:
        row = conn.execute(_WHOLE_LINE, key).first()
        extra, before = 1, _END
    else:
        row = conn.execute(_UP_TO, {**key, "me": line_no}).first()
        extra, before = 0, seq
    if row is None:
        return 0  # nobody waits
    if row.lo is None or row.hi is None:  # rows from before the numbering still wait
        return int(conn.execute(_COUNT, {**key, "before": before}).scalar_one())
    # Never below 0: the request itself may have been claimed since it was read.
    return max(0, int(row.hi) - int(row.lo) + extra - int(row.left_))


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
