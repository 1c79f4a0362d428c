"""`fal.toolkit` on tidal: `File`, `Image`, `download_file` and `download_model_weights`
are `tidal.toolkit`'s, loaded on first use."""

from tidal.compat.fal_api import module_dir, module_getattr

__all__ = ["File", "Image", "download_file", "download_model_weights"]

__getattr__ = module_getattr(__name__)
__dir__ = module_dir(__name__)
