"""Runner logs: one file per runner under `<data-dir>/logs/<owner>/<app>/`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path


def runner_log_path(data_dir: Path, owner: str, app: str, runner_id: str) -> Path:
    return data_dir / "logs" / owner / app / f"{runner_id}.log"


def app_log_files(data_dir: Path, owner: str, app: str) -> list[Path]:
    folder = data_dir / "logs" / owner / app
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a log file (reads only its end)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:] if lines > 0 else []


async def follow(
    data_dir: Path, owner: str, app: str, lines: int, poll: float = 0.25
) -> AsyncIterator[str]:
    """Yield the last lines of every runner's log, then new lines as they come,
    including from runners that start later. Lines are prefixed with the runner id."""
    offsets: dict[Path, int] = {}
    for path in app_log_files(data_dir, owner, app):
        for line in tail(path, lines):
            yield f"[{path.stem}] {line}\n"
        offsets[path] = path.stat().st_size
    while True:
        for path in app_log_files(data_dir, owner, app):
            start = offsets.get(path, 0)
            size = path.stat().st_size
            if size <= start:
                continue
            with path.open("rb") as f:
                f.seek(start)
                chunk = f.read(size - start)
            # Only whole lines; a partial last line waits for its newline.
            cut = chunk.rfind(b"\n") + 1
            offsets[path] = start + cut
            for line in chunk[:cut].decode("utf-8", "replace").splitlines():
                yield f"[{path.stem}] {line}\n"
        await asyncio.sleep(poll)
