"""`DistributedWorker`: one rank's process-side object (fal's interface). Subclass it:
`setup(**kwargs)` once per rank, `__call__(streaming=False, **payload)` per call."""

from __future__ import annotations

import asyncio
import inspect
import json
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from functools import partial
from typing import Any


class DistributedWorker:
    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        self.rank = rank
        self.world_size = world_size
        self.queue: queue.Queue[Any] = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run_forever, daemon=True)
        self.thread.start()

    def _run_forever(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def device(self) -> Any:
        """This rank's device: `cuda:<rank>` where CUDA is available, else the CPU."""
        import torch

        return torch.device(f"cuda:{self.rank}" if torch.cuda.is_available() else "cpu")

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def initialize(self, **kwargs: Any) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(self.device)
        self.rank_print(f"Initializing worker on device {self.device}")
        started = time.time()
        self.run_in_worker(self.setup, **kwargs).result()
        self.rank_print(f"Setup took {time.time() - started:.2f} seconds")

    def add_streaming_result(
        self, result: Any, image_format: str = "jpeg", as_text_event: bool = False
    ) -> None:
        """Send `result` to the caller of `stream()` now (rank 0's are sent)."""
        self.queue.put_nowait(text_event(result) if as_text_event else result)

    def add_streaming_error(self, error: Exception) -> None:
        self.queue.put_nowait({"error": str(error)})

    def rank_print(self, message: str, debug: bool = False) -> None:
        print(f"{'[debug] ' if debug else ''}[rank {self.rank}] {message}", flush=True)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        if not self.running:
            raise RuntimeError("the worker's event loop is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run_in_worker(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Run `func` on the worker's event loop (a sync one in its executor)."""
        if inspect.iscoroutinefunction(func):
            return self.submit(func(*args, **kwargs))

        async def in_executor() -> Any:
            return await asyncio.get_running_loop().run_in_executor(
                None, partial(func, *args, **kwargs)
            )

        return self.submit(in_executor())

    def shutdown(self, timeout: float | None = None) -> None:
        try:
            self.run_in_worker(self.teardown).result()
        except Exception as exc:
            self.rank_print(f"Error during teardown: {exc}")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=timeout)

    # Overridden by the app.

    def setup(self, **kwargs: Any) -> None:
        """Once per rank, with `DistributedRunner.start(**kwargs)`'s arguments."""

    def teardown(self) -> None:
        """Once per rank when the runner stops."""

    def __call__(self, streaming: bool = False, **kwargs: Any) -> Any:
        """Every rank, once per `invoke()`/`stream()`, with the payload as arguments."""
        return {}


def text_event(value: Any) -> bytes:
    """A server-sent event carrying `value` as JSON."""
    return f"data: {json.dumps(value)}\n\n".encode()
