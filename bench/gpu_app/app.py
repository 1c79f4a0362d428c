"""A small PyTorch model server for bench/gpu_check.py (no requirements: the platform's Python).

The machine type comes from TIDAL_BENCH_MACHINE_TYPE, read when the CLI imports this file
to deploy it (the value is stored in the app's spec; runners do not see that variable).
Without torch the endpoint still answers, saying so, so placement can be checked anywhere.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pydantic import BaseModel, Field

import tidal


class InferRequest(BaseModel):
    batch: int = Field(default=64, ge=1, le=4096)


class GpuModel(tidal.App, keep_alive=5, max_concurrency=1):
    machine_type = os.environ.get("TIDAL_BENCH_MACHINE_TYPE", "S")

    def setup(self) -> None:
        try:
            import torch
        except ImportError:
            self.torch: Any = None
            return
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = torch.nn.Sequential(
            torch.nn.Linear(1024, 4096),
            torch.nn.ReLU(),
            torch.nn.Linear(4096, 1024),
        ).to(self.device)
        self.model.eval()
        self.infer(InferRequest(batch=1))  # CUDA context and kernels, before ready

    @tidal.endpoint("/infer")
    def infer(self, input: InferRequest) -> dict[str, Any]:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        torch = self.torch
        if torch is None:
            return {"torch": "missing", "cuda_visible_devices": visible}
        x = torch.randn(input.batch, 1024, device=self.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = self.model(x)
        if self.device == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1000
        return {
            "torch": torch.__version__,
            "device": str(y.device),
            "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cuda_visible_devices": visible,
            "ms": round(ms, 3),
        }
