"""A runner's GPUs as one torch.distributed group, as fal's `fal.distributed`:
`DistributedRunner(worker_cls=MyWorker, world_size=N)` starts N worker processes
(ranks), each a `DistributedWorker` on its own device, joined in a process group
(NCCL on GPUs, gloo on CPU); `invoke(payload)` runs every rank's `__call__` and
returns rank 0's result, `stream(payload)` yields what rank 0 adds on the way.
Needs torch (the app's requirement), imported only when a runner starts."""

from tidal.distributed.runner import DistributedRunner
from tidal.distributed.worker import DistributedWorker

__all__ = ["DistributedRunner", "DistributedWorker"]
