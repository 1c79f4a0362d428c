"""The runtime layer's content: tidal's package plus the few packages its runtime
imports, installed on the host for the image's Python version and CPU, once per
(runtime digest, Python, CPU) under `<data>/images/runtime/`.

uv installs them with `--target` for a foreign interpreter (`--python-version`,
`--python-platform`, binary wheels only), so the image needs neither network nor
pip: the build copies the finished folder in. Versions are pinned to those the
platform itself runs with, so a runtime digest names exactly one set of files.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import tidal
from tidal.environments import RUNTIME_REQUIREMENTS, _uv_env, uv_binary

# uv's names for the CPUs a manylinux wheel is built for.
PLATFORMS = {"x86_64": "x86_64-manylinux_2_17", "aarch64": "aarch64-manylinux_2_17"}
MARKER = ".tidal-runtime-complete"


class RuntimeSiteError(Exception):
    pass


def pinned_requirements() -> list[str]:
    """RUNTIME_REQUIREMENTS pinned to the versions installed here (else as given)."""
    pins = []
    for requirement in RUNTIME_REQUIREMENTS:
        name = re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0]
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(requirement)
    return pins


def _package_files() -> list[Path]:
    root = Path(tidal.__file__).parent
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


@functools.cache
def runtime_digest() -> str:
    """What the runtime layer holds: tidal's own files (its version included) and pins.
    Computed once per process: the platform's runtime does not change while it runs."""
    root = Path(tidal.__file__).parent
    h = hashlib.sha256(f"{tidal.__version__}\0{pinned_requirements()}\0".encode())
    for path in _package_files():
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:24]


class RuntimeSites:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "images" / "runtime"
        self.requirements_root = data_dir / "images" / "requirements"
        self._locks: dict[str, asyncio.Lock] = {}

    async def ensure(self, python_version: str, machine: str) -> Path:
        """The folder to COPY into an image with this Python ("3.11") and CPU."""
        uv_platform = _uv_platform(machine)
        folder = self.root / f"{runtime_digest()}-py{python_version}-{machine}"

        def add_tidal(site: Path) -> None:
            source = Path(tidal.__file__).parent
            shutil.copytree(source, site / "tidal", ignore=shutil.ignore_patterns("__pycache__"))

        async with self._locks.setdefault(str(folder), asyncio.Lock()):
            if not (folder / MARKER).exists():
                await _install(
                    folder / "tidal-runtime", pinned_requirements(), python_version,
                    uv_platform, "tidal's runtime packages", add_tidal,
                )  # fmt: skip
        return folder

    async def ensure_requirements(
        self, requirements: Sequence[str], python_version: str, machine: str
    ) -> Path:
        """The app's requirements installed for the image's Python and CPU (once per
        set of requirements), to COPY into the image as `tidal-requirements`."""
        uv_platform = _uv_platform(machine)
        key = hashlib.sha256("\0".join(sorted(requirements)).encode()).hexdigest()[:24]
        folder = self.requirements_root / f"{key}-py{python_version}-{machine}"
        async with self._locks.setdefault(str(folder), asyncio.Lock()):
            if not (folder / MARKER).exists():
                await _install(
                    folder / "tidal-requirements", list(requirements), python_version,
                    uv_platform, "the app's requirements",
                )  # fmt: skip
        return folder


def _uv_platform(machine: str) -> str:
    uv_platform = PLATFORMS.get(machine)
    if uv_platform is None:
        raise RuntimeSiteError(
            f"the image's CPU architecture is {machine!r}; tidal installs packages into "
            f"images built for {', '.join(PLATFORMS)}"
        )
    return uv_platform


async def _install(
    site: Path,
    packages: list[str],
    python_version: str,
    uv_platform: str,
    what: str,
    finish: Callable[[Path], None] | None = None,
) -> None:
    """uv installs `packages` into `site` (binary wheels for the image's Python and
    CPU); the folder holding it appears complete, with its marker, or not at all."""
    folder = site.parent
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    target = partial / site.name
    cmd = [
        uv_binary(), "pip", "install", "--quiet", "--target", str(target),
        "--python-version", python_version, "--python-platform", uv_platform,
        "--only-binary", ":all:", *packages,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=_uv_env()
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeSiteError(
            f"installing {what} for the image's Python {python_version} failed (binary "
            f"wheels only; the platform's host needs to reach a package index once): "
            f"{out.decode(errors='replace')[-2000:]}"
        )
    shutil.rmtree(target / "bin", ignore_errors=True)  # scripts with the host's shebang
    target.mkdir(parents=True, exist_ok=True)  # an empty install still makes a layer
    if finish is not None:
        finish(target)
    (partial / MARKER).write_text(" ".join(packages))
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(folder)
