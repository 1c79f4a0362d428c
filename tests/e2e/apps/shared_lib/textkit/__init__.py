"""A local package that lives outside the app's folder (shipped by local_python_modules)."""

from textkit.shout import shout

__all__ = ["shout"]
