"""The template pool's I/O with real processes: each a small Python program that
speaks the runner's control line as a template does (tidal.runtime.channel)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tidal.templates import TemplatePool

# Says it is ready (and what it costs), then waits for its claim or its line to close.
TEMPLATE = """
import sys
from tidal.runtime.channel import Channel
line = Channel(int(sys.argv[sys.argv.index("--control-fd") + 1]))
line.send({"template_ready": True, "rss_kib": 20000})
line.receive()
"""


async def spawn(
    cmd: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path, fd: int
) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *cmd, cwd=cwd, env=dict(env), stdout=log, stderr=log, pass_fds=(fd,),
            start_new_session=True,
        )  # fmt: skip


async def until(check: Callable[[], bool], seconds: float = 30) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def test_a_pool_fills_is_claimed_once_each_and_ends_with_its_app(tmp_path: Path) -> None:
    async def main() -> None:
        pool = TemplatePool(spawn, tmp_path)
        command = [sys.executable, "-c", TEMPLATE]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
        await pool.ensure("k1", "app", 1, command, env, tmp_path, count=3, owner="alice")
        assert len(pool.templates()) == 1  # one, until it has said what it costs
        await until(lambda: [t["state"] for t in pool.templates()] == ["ready"] * 3)
        # Another owner's app of the same name keeps its own template.
        await pool.ensure("k2", "app", 1, command, env, tmp_path, count=1, owner="bob")
        await until(lambda: len(pool.templates()) == 4)
        claimed = [await pool.claim("k1") for _ in range(3)]
        assert all(claimed) and len({t.process.pid for t in claimed if t}) == 3
        assert await pool.claim("k1") is None  # each is claimed by one runner only
        for template in claimed:
            assert template is not None
            pool.discard(template)
        pool.forget("bob", "app")
        await until(lambda: not pool.templates())
        pool.kill_all()
        for template in claimed:
            assert template is not None
            await asyncio.wait_for(template.process.wait(), 10)

    asyncio.run(main())
