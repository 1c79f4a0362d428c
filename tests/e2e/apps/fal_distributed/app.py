# A multi-GPU app written as fal's distributed docs write one; nothing adapted to tidal
# (torch is not in `requirements` only so that the test runs on the platform's own
# environment, which has the CPU wheel, instead of downloading a CUDA build).
import os
from collections.abc import AsyncIterator

import fal
from fal.distributed import DistributedRunner, DistributedWorker
from fastapi.responses import StreamingResponse
from pydantic import BaseModel


class SumWorker(DistributedWorker):
    def setup(self, scale: int = 1, **kwargs) -> None:
        self.scale = scale
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        self.gpu = visible[self.rank] if self.rank < len(visible) else "?"
        self.rank_print(f"set up on GPU {self.gpu}")

    def __call__(self, streaming: bool = False, value: int = 0, **kwargs) -> dict:
        import torch
        import torch.distributed as dist

        share = torch.tensor([float(value * (self.rank + 1) * self.scale)])
        dist.all_reduce(share)  # every rank's share, summed across the group
        gpus = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        dist.all_gather(gpus, torch.tensor([int(self.gpu)]))  # each rank's GPU id
        if streaming:
            for step in range(3):
                self.add_streaming_result({"step": step, "rank": self.rank})
        if value < 0:
            raise ValueError("value must not be negative")
        return {
            "sum": share.item(),
            "gpus": [str(int(g.item())) for g in gpus],
            "device": str(self.device),
            "world_size": self.world_size,
        }


class Input(BaseModel):
    value: int


class MultiGPU(fal.App, keep_alive=300):
    machine_type = "GPU-A100"
    num_gpus = 2

    async def setup(self) -> None:
        self.runner = DistributedRunner(worker_cls=SumWorker, world_size=self.num_gpus)
        await self.runner.start(scale=10)

    async def teardown(self) -> None:
        await self.runner.stop()

    @fal.endpoint("/")
    async def run(self, input: Input) -> dict:
        return await self.runner.invoke(input.model_dump())

    @fal.endpoint("/stream")
    async def stream(self, input: Input) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            async for event in self.runner.stream(input.model_dump(), as_text_events=True):
                yield event

        return StreamingResponse(events(), media_type="text/event-stream")
