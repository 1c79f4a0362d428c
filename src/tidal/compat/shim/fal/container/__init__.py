"""`fal.container` on tidal: `ContainerImage` is `tidal.ContainerImage`."""

from tidal.compat.fal_api import module_dir, module_getattr

__all__ = ["ContainerImage"]

__getattr__ = module_getattr(__name__)
__dir__ = module_dir(__name__)
