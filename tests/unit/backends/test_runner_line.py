"""The platform's end of a runner's control line, over a real socketpair."""

from __future__ import annotations

import asyncio

from tidal.backends.runner_line import RunnerLine
from tidal.runtime.channel import Channel, pair


def test_heard_listening_when_the_runner_says_so() -> None:
    async def main() -> bool:
        platform_end, runner_end = pair()
        line = RunnerLine(platform_end)
        runner = Channel(runner_end.detach())
        runner.send({"listening": True})
        heard = await asyncio.wait_for(line.heard_listening(), 10)
        runner.sock.close()
        line.close()
        return heard

    assert asyncio.run(main()) is True


def test_not_heard_when_the_runner_ends_without_saying_so() -> None:
    async def main() -> bool:
        platform_end, runner_end = pair()
        line = RunnerLine(platform_end)
        runner_end.close()  # the runtime exited before its server listened
        heard = await asyncio.wait_for(line.heard_listening(), 10)
        line.close()
        return heard

    assert asyncio.run(main()) is False
