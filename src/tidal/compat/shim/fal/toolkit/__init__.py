"""`fal.toolkit` on tidal: `File` and `Image` are `tidal.toolkit`'s, loaded on first use."""

from tidal.compat.fal_api import module_dir, module_getattr

__all__ = ["File", "Image"]

__getattr__ = module_getattr(__name__)
__dir__ = module_dir(__name__)
