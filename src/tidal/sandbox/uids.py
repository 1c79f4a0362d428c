"""Each app's own uid (and gid of the same number), from the configured range, kept
in DATA_DIR/sandbox/uids.json so that an app's files in /data stay its own across
restarts. Allocation takes a file lock: platforms sharing a DATA_DIR agree."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path


class UidRangeFull(RuntimeError):
    pass


class UidAllocator:
    def __init__(self, folder: Path, first: int, count: int) -> None:
        self.path = folder / "uids.json"
        self.lock = folder / "uids.lock"
        self.first, self.count = first, count
        self._known: dict[str, int] = {}

    def uid_for(self, app: str) -> int:
        known = self._known.get(app)
        if known is not None:
            return known
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.lock.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                table: dict[str, int] = json.loads(self.path.read_text())
            except FileNotFoundError:
                table = {}
            if app not in table:
                used = set(table.values())
                free = next(
                    (u for u in range(self.first, self.first + self.count) if u not in used), None
                )
                if free is None:
                    raise UidRangeFull(
                        f"every uid of the sandbox range {self.first}-{self.first + self.count - 1} "
                        "is given to an app; widen sandbox_uid_range in tidal.toml"
                    )
                table[app] = free
                tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(table, indent=0, sort_keys=True))
                tmp.replace(self.path)
        self._known = table
        return table[app]
