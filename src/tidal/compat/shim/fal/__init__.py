"""tidal's stand-in for the `fal` package (see `tidal.compat`).

`import fal` finds this package only where the real fal is not installed and
`tidal.compat.install_fal_shim()` was called. Its names are tidal's objects."""

from tidal.compat.fal_api import module_all, module_dir, module_getattr

__tidal_shim__ = True
__all__ = module_all(__name__)
__getattr__ = module_getattr(
    __name__, submodules=("container", "distributed", "exceptions", "toolkit")
)
__dir__ = module_dir(__name__, submodules=("container", "distributed", "exceptions", "toolkit"))
