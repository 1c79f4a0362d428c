"""Reading back what a request printed on its runner (see tidal.runtime.request_logs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def logs_for(log_dir: Path, request_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    """The request's lines from every runner of the app, oldest first."""
    needle = f'"request_id": "{request_id}"'
    found: list[dict[str, Any]] = []
    for path in sorted(log_dir.glob("*.requests.jsonl")):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if needle in line:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    found.append(record)
    found.sort(key=lambda r: float(r["timestamp"]))
    # fal's shape: an ISO 8601 timestamp and the line's source.
    return [
        {"message": r["message"], "level": r["level"], "source": "user",
         "timestamp": datetime.fromtimestamp(float(r["timestamp"]), UTC).isoformat()}
        for r in found[-limit:]
    ]  # fmt: skip
