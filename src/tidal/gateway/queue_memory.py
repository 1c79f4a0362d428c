"""What a platform keeps in memory of its queue: where it is fast and exact.

- `Lines`: each app's waiting requests in claim order (priority, then arrival), when
  this platform alone uses the database (SQLite): the next request to hand a free slot
  is the line's head, and a position is a bisection, O(log n), never a count.
- `Held`: the requests this platform holds (waiting here, running here, or finished
  here a moment ago), so a status poll is answered without the database. Bounded: past
  its byte budget a waiting request keeps only its place in line (its body is read back
  when it is claimed), and only the newest finished results are kept. Older finished
  requests keep their status without their bodies (a few hundred bytes each), since a
  completed request's status never changes: a poll of one is a dictionary read, while
  its result's GET (which needs the body) reads the database.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict

from tidal.control.queue_store import COMPLETED, QueuedRequest

Key = tuple[str, str]  # (owner, app)
_Place = tuple[int, int, str]  # (priority, seq, request id): claim order

# Bytes of request bodies held for waiting and running requests.
HELD_BYTES = 128 * 2**20
# Finished results held for status polls and the result's GET (most recent first).
FINISHED_KEPT = 4096
FINISHED_BYTES = 64 * 2**20
# Statuses kept (without bodies) of older finished requests: ~450 B each, ~15 MB.
STATUS_KEPT = 32768


class Lines:
    def __init__(self) -> None:
        self._lines: dict[Key, list[_Place]] = {}
        self._where: dict[str, tuple[Key, _Place]] = {}

    def add(self, key: Key, priority: int, seq: int, request_id: str) -> None:
        place = (priority, seq, request_id)
        bisect.insort(self._lines.setdefault(key, []), place)
        self._where[request_id] = (key, place)

    def remove(self, request_id: str) -> bool:
        found = self._where.pop(request_id, None)
        if found is None:
            return False
        key, place = found
        line = self._lines[key]
        del line[bisect.bisect_left(line, place)]
        if not line:
            del self._lines[key]
        return True

    def position(self, request_id: str) -> int | None:
        """0-based place in its app's line; None when it is not waiting."""
        found = self._where.get(request_id)
        if found is None:
            return None
        key, place = found
        return bisect.bisect_left(self._lines[key], place)

    def pop(self, key: Key) -> str | None:
        """The next request to run (now no longer waiting), or None."""
        line = self._lines.get(key)
        if not line:
            return None
        _, _, request_id = line[0]
        self.remove(request_id)
        return request_id

    def count(self, key: Key) -> int:
        return len(self._lines.get(key, ()))

    def keys(self) -> set[Key]:
        return set(self._lines)

    def drop(self, key: Key) -> list[str]:
        """Empty the app's line; the ids it held."""
        ids = [request_id for _, _, request_id in self._lines.pop(key, [])]
        for request_id in ids:
            del self._where[request_id]
        return ids

    def clear(self) -> None:
        self._lines.clear()
        self._where.clear()


class Held:
    def __init__(self) -> None:
        self._live: dict[str, tuple[QueuedRequest, int]] = {}  # waiting or running here
        self._live_bytes = 0
        self._finished: OrderedDict[str, tuple[QueuedRequest, int]] = OrderedDict()
        self._finished_bytes = 0
        self._statuses: OrderedDict[str, QueuedRequest] = OrderedDict()

    def get(self, request_id: str) -> QueuedRequest | None:
        found = self._live.get(request_id) or self._finished.get(request_id)
        return found[0] if found else None

    def status(self, request_id: str) -> QueuedRequest | None:
        """As `get`, or else a finished request's status only: its bodies are not kept."""
        return self.get(request_id) or self._statuses.get(request_id)

    def live(self, request_id: str) -> QueuedRequest | None:
        found = self._live.get(request_id)
        return found[0] if found else None

    def hold(self, item: QueuedRequest) -> bool:
        """Keep a waiting or running request; False (not kept) past the byte budget."""
        if item.id in self._live:
            return True
        size = item.size
        if self._live_bytes + size > HELD_BYTES:
            return False
        self._live[item.id] = (item, size)
        self._live_bytes += size
        return True

    def drop(self, request_id: str) -> None:
        found = self._live.pop(request_id, None)
        if found is not None:
            self._live_bytes -= found[1]

    def forget_finished(self) -> None:
        """Results were pruned from the database: read them from there again."""
        self._finished.clear()
        self._finished_bytes = 0
        self._statuses.clear()

    def finished(self, item: QueuedRequest) -> None:
        """It completed (here): kept among the newest results, no longer live."""
        assert item.status == COMPLETED
        self.drop(item.id)
        self._statuses.pop(item.id, None)
        if (old := self._finished.pop(item.id, None)) is not None:
            self._finished_bytes -= old[1]
        size = item.size
        self._finished[item.id] = (item, size)
        self._finished_bytes += size
        while self._finished and (
            len(self._finished) > FINISHED_KEPT or self._finished_bytes > FINISHED_BYTES
        ):
            _, (oldest, size) = self._finished.popitem(last=False)
            self._finished_bytes -= size
            self._keep_status(oldest)

    def _keep_status(self, item: QueuedRequest) -> None:
        # A copy, not the item itself: whoever still holds the item may read its body.
        status = object.__new__(QueuedRequest)
        status.__dict__.update(item.__dict__, headers=[], body=b"", response_headers=[],
                               response_body=None)  # fmt: skip
        self._statuses[item.id] = status
        while len(self._statuses) > STATUS_KEPT:
            self._statuses.popitem(last=False)
