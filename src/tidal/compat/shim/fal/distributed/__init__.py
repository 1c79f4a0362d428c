"""`fal.distributed` on tidal: `tidal.distributed` (a runner's GPUs as one torch group)."""

from tidal.compat.fal_api import module_all, module_dir, module_getattr

__all__ = module_all(__name__)
__getattr__ = module_getattr(__name__)
__dir__ = module_dir(__name__)
