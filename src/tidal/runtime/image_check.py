"""Run by an image's own Python as the last step of its build (`python3 -m
tidal.runtime.image_check`): can tidal's runtime work with the packages the image ends up
with? The user's pins come first on sys.path (their image's packages, then the app's
`requirements`), so a pin older than the runtime supports, say `pydantic<2`, would
otherwise only surface as an ImportError in every runner's log. Failing the build here
names the package, the version found, where, and what the runtime needs.

Standard library only: this runs before anything else of tidal's is known to import.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Iterable
from importlib import metadata

from tidal.environments import RUNTIME_REQUIREMENTS

# Lines of the verdict start with this, so the platform can pick them out of the log.
PREFIX = "tidal-image-check: "
# The runtime's own module that imports its requirements (FastAPI, pydantic, uvicorn).
RUNTIME_MODULE = "tidal.runtime.app_server"


def _release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version (`2.6.0rc1` → (2, 6, 0)); enough for `>=`."""
    numbers = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(n) for n in numbers.group().split(".")) if numbers else ()


def too_old(
    requirements: Iterable[str], found: Callable[[str], tuple[str, str] | None]
) -> list[str]:
    """What is wrong with the installed versions, given `found(name)` → (version, where),
    or None when the package is absent (the runtime layer then supplies it)."""
    problems = []
    for requirement in requirements:
        name, sep, minimum = requirement.partition(">=")
        installed = found(name.strip())
        if not sep or installed is None:
            continue
        version, where = installed
        if _release(version) < _release(minimum):
            problems.append(
                f"the image has {name} {version} (in {where}), but tidal's runtime needs "
                f"{requirement}: raise or drop that pin in the Dockerfile or the app's "
                "requirements"
            )
    return problems


def _found(name: str) -> tuple[str, str] | None:
    # The first distribution on sys.path is the one `import` finds too.
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    where = getattr(dist, "_path", None)
    return dist.version, str(where.parent) if where is not None else "sys.path"


def main() -> int:
    problems = too_old(RUNTIME_REQUIREMENTS, _found)
    if not problems:
        try:
            importlib.import_module(RUNTIME_MODULE)
        except Exception as exc:  # any failure to import is the image's to fix
            problems.append(
                f"tidal's runtime cannot start with this image's packages: importing "
                f"{RUNTIME_MODULE} failed with {type(exc).__name__}: {exc}"
            )
    for problem in problems:
        print(PREFIX + problem, flush=True)
    if problems:
        return 1
    print(PREFIX + "ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
