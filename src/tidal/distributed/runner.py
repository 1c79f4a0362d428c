"""`DistributedRunner`: starts the ranks and talks to them (fal's interface).

Each rank is a process (multiprocessing's spawn: CUDA cannot be forked) joined
to the others with `torch.distributed.init_process_group` over TCP on
`master_addr:master_port`: NCCL where CUDA is available, gloo otherwise (a CPU
host with fake GPUs runs the same code). The runner sends each call to every
rank over a pipe (fal uses ZeroMQ and a broadcast from rank 0; the effect is
the same), the ranks meet at a barrier when done, and rank 0's result (or
streamed items) come back. A rank's failure is answered as fal answers it:
the result is `{"error": message}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import traceback
from collections.abc import AsyncIterator
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tidal.distributed.worker import DistributedWorker, text_event

_POLL = 0.05


class DistributedRunner:
    def __init__(
        self,
        worker_cls: type[DistributedWorker] = DistributedWorker,
        world_size: int = 1,
        master_addr: str = "127.0.0.1",
        master_port: int = 29500,
        worker_addr: str = "127.0.0.1",
        worker_port: int = 54923,
        timeout: int = 86400,
        keepalive_payload: dict[str, Any] | None = None,
        keepalive_interval: float | None = None,
        cwd: str | Path | None = None,
        set_device: bool | None = None,
    ) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be at least 1, not {world_size}")
        self.worker_cls = worker_cls
        self.world_size = world_size
        self.master_addr = master_addr
        self.master_port = master_port
        self.timeout = timeout
        self.cwd = cwd
        self.keepalive_payload = keepalive_payload or {}
        self.keepalive_interval = keepalive_interval
        self.processes: list[Any] = []
        self.pipes: list[Connection] = []
        self._lock = asyncio.Lock()
        self._keepalive: asyncio.Task[None] | None = None

    def is_alive(self) -> bool:
        return bool(self.processes) and all(p.is_alive() for p in self.processes)

    def ensure_alive(self) -> None:
        dead = [(rank, p.exitcode) for rank, p in enumerate(self.processes) if not p.is_alive()]
        if not self.processes or dead:
            raise RuntimeError(
                "the distributed workers are not running"
                + (f": rank {dead[0][0]} exited with status {dead[0][1]}" if dead else "")
                + "; start() them (again)"
            )

    async def start(self, timeout: int = 1800, **kwargs: Any) -> None:
        """Start every rank, run its `setup(**kwargs)`, and return once all are ready."""
        if self.is_alive():
            raise RuntimeError("the distributed workers are already running")
        context = multiprocessing.get_context("spawn")
        for rank in range(self.world_size):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_rank_main,
                args=(self.worker_cls, rank, self.world_size, self.master_addr,
                      self.master_port, self.timeout, self.cwd, theirs, kwargs),
                daemon=True, name=f"tidal-distributed-rank-{rank}",
            )  # fmt: skip
            process.start()
            theirs.close()
            self.processes.append(process)
            self.pipes.append(ours)
        try:
            for rank, pipe in enumerate(self.pipes):
                message = await self._receive(pipe, timeout)
                if message[0] != "ready":
                    raise RuntimeError(f"rank {rank} failed to start: {message[1]}")
        except BaseException:
            self.terminate()
            raise
        self._start_keepalive()

    async def invoke(
        self, payload: dict[str, Any] | None = None, timeout: int | None = None
    ) -> Any:
        """Run every rank's `__call__(**payload)`; rank 0's result."""
        async with self._lock:
            self.ensure_alive()
            self._send_all(("invoke", payload or {}))
            while True:
                kind, value = await self._receive(self.pipes[0], timeout)
                if kind == "done":
                    return value

    async def stream(
        self,
        payload: dict[str, Any] | None = None,
        timeout: int | None = None,
        streaming_timeout: int | None = None,
        as_text_events: bool = False,
    ) -> AsyncIterator[Any]:
        """Run every rank's `__call__(streaming=True, **payload)`; yield what rank 0 adds
        with `add_streaming_result`, then its result."""
        async with self._lock:
            self.ensure_alive()
            self._send_all(("stream", {**(payload or {}), "__as_text_events": as_text_events}))
            while True:
                kind, value = await self._receive(self.pipes[0], streaming_timeout or timeout)
                if kind == "item":
                    yield (
                        text_event(value)
                        if as_text_events and not isinstance(value, bytes)
                        else value
                    )
                elif kind == "done":
                    yield text_event(value) if as_text_events else value
                    return

    async def stop(self, timeout: int = 10) -> None:
        """Tear every rank down (its `teardown()`), then end the processes."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        with contextlib.suppress(OSError, ValueError):
            self._send_all(("exit", None))
        for process in self.processes:
            await asyncio.to_thread(process.join, timeout)
        self.terminate()

    def terminate(self, timeout: float = 10) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self.pipes:
            pipe.close()
        self.processes, self.pipes = [], []

    async def __aenter__(self) -> DistributedRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- internals ---------------------------------------------------------------

    def _send_all(self, message: tuple[str, Any]) -> None:
        for pipe in self.pipes:
            pipe.send(message)

    async def _receive(self, pipe: Connection, timeout: float | None) -> tuple[str, Any]:
        """The next message from a rank; a dead rank or the timeout raises."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if await asyncio.to_thread(pipe.poll, _POLL * 4):
                message: tuple[str, Any] = pipe.recv()
                return message
            self.ensure_alive()
            if deadline is not None and loop.time() > deadline:
                raise TimeoutError(f"the distributed workers did not answer in {timeout}s")

    def _start_keepalive(self) -> None:
        if self.keepalive_interval is None:
            return
        interval = self.keepalive_interval

        async def beat() -> None:
            while True:
                await asyncio.sleep(interval)
                if not self._lock.locked():
                    await self.invoke(self.keepalive_payload)

        self._keepalive = asyncio.get_running_loop().create_task(beat())


def _rank_main(
    worker_cls: type[DistributedWorker],
    rank: int,
    world_size: int,
    master_addr: str,
    master_port: int,
    timeout: int,
    cwd: str | Path | None,
    pipe: Connection,
    setup_kwargs: dict[str, Any],
) -> None:
    """One rank's process: join the group, set up, then serve calls from the runner."""
    import torch
    import torch.distributed as dist

    if cwd is not None:
        os.chdir(cwd)
    os.environ.update(
        MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
        LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
    )  # fmt: skip
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(
        backend, init_method=f"tcp://{master_addr}:{master_port}", rank=rank,
        world_size=world_size, timeout=timedelta(seconds=timeout),
    )  # fmt: skip
    worker = worker_cls(rank, world_size)
    try:
        worker.initialize(**setup_kwargs)
    except Exception as exc:
        traceback.print_exc()
        pipe.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    pipe.send(("ready", None))
    dist.barrier()
    while True:
        command, payload = pipe.recv()
        if command == "exit":
            break
        streaming = command == "stream"
        payload.pop("__as_text_events", None)  # the runner encodes the final event
        future = worker.run_in_worker(worker.__call__, streaming=streaming, **payload)
        while streaming and not future.done():
            with contextlib.suppress(queue.Empty):
                item = worker.queue.get(timeout=_POLL)
                if rank == 0:
                    pipe.send(("item", item))
        try:
            result = future.result()
        except Exception as exc:
            worker.rank_print(f"Error in execution: {exc}\n{traceback.format_exc()}")
            result = {"error": str(exc)}
        while streaming and not worker.queue.empty():
            item = worker.queue.get_nowait()
            if rank == 0:
                pipe.send(("item", item))
        dist.barrier()
        if rank == 0:
            pipe.send(("done", result))
    worker.rank_print("Worker is tearing down.")
    worker.shutdown()
    dist.destroy_process_group()
