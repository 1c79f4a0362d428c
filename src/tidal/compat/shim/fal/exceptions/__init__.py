"""`fal.exceptions` on tidal: `tidal.sdk.exceptions`, answered as fal answers them."""

from tidal.compat.fal_api import module_all, module_dir, module_getattr

__all__ = module_all(__name__)
__getattr__ = module_getattr(__name__, submodules=())
__dir__ = module_dir(__name__, submodules=())
