"""Runner environments: one virtual environment per distinct (requirements,
Python version, tidal runtime), built with uv at deploy time, cached by
content hash and shared by every app that asks for the same thing.

An environment lives in `<data>/envs/<hash>/`; a `tidal-env.json` written last
marks it complete. The tidal package itself is not installed into it: runners
import it from `<data>/runtime/<version>/` (a link to this installation), so
that the user's own pins win wherever they are compatible with the few
packages tidal's runtime needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import tidal

# What tidal's runtime imports inside a runner (App serving, files, specs).
RUNTIME_REQUIREMENTS = (
    "pydantic>=2.6", "fastapi>=0.110", "uvicorn>=0.29", "httpx>=0.27", "cloudpickle>=3.0",
    "msgpack>=1.0",
)  # fmt: skip
MARKER = "tidal-env.json"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class EnvironmentBuildError(Exception):
    """A build that failed; the message is uv's (or ours), meant for the user."""


@dataclass(frozen=True)
class Environment:
    digest: str
    path: Path
    python_version: str

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def uv_binary() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise EnvironmentBuildError("uv is not installed: pip install uv") from None
        return found


def _uv_env() -> dict[str, str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    if "SSL_CERT_FILE" not in env and CA_BUNDLE.is_file():
        env["SSL_CERT_FILE"] = str(CA_BUNDLE)  # the machine's CA store (proxies included)
    return env


def interpreters() -> dict[str, Path]:
    """Python interpreters on this host: full version -> path (uv's view, plus pyenv's)."""
    found: dict[str, Path] = {}
    candidates = sorted(Path.home().glob(".pyenv/versions/3.*/bin/python3"))
    try:
        out = subprocess.run(
            [uv_binary(), "python", "list", "--only-installed", "--output-format", "json"],
            capture_output=True, text=True, timeout=30, env=_uv_env(),
        ).stdout  # fmt: skip
        candidates += [Path(item["path"]) for item in json.loads(out or "[]")]
    except (EnvironmentBuildError, OSError, ValueError, subprocess.SubprocessError):
        pass
    for path in candidates:
        version = _version_of(path)
        if version and version not in found:
            found[version] = path
    return found


def _version_of(python: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_interpreter(wanted: str | None) -> tuple[str, Path]:
    """(full version, path) for `wanted` ("3.12", "3.12.1"), or this platform's own."""
    if wanted is None:
        return ".".join(map(str, sys.version_info[:3])), Path(sys.executable)
    if not re.fullmatch(r"3\.\d+(\.\d+)?", wanted):
        raise EnvironmentBuildError(f"python_version {wanted!r} is not a version like '3.12'")
    available = interpreters()
    for version, path in sorted(available.items(), reverse=True):
        if version == wanted or version.startswith(wanted + "."):
            return version, path
    listed = ", ".join(sorted(available)) or "none found"
    raise EnvironmentBuildError(
        f"python_version {wanted!r} is not installed on the platform's host; installed: {listed}"
    )


def digest_of(requirements: list[str], python_version: str) -> str:
    key = {
        "requirements": sorted(r.strip() for r in requirements if r.strip()),
        "python": python_version,
        "tidal": tidal.__version__,
        "runtime": RUNTIME_REQUIREMENTS,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def runtime_path(data_dir: Path) -> Path:
    """A folder holding only `tidal` (a link to this installation), for PYTHONPATH."""
    folder = data_dir / "runtime" / tidal.__version__
    link = folder / "tidal"
    if not link.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tidal-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path(tidal.__file__).parent, target_is_directory=True)
        tmp.replace(link)
    return folder


class Environments:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "envs"
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, digest: str) -> Environment | None:
        path = self.root / digest
        try:
            meta = json.loads((path / MARKER).read_text())
        except (OSError, ValueError):
            return None
        return Environment(digest, path, meta["python"])

    def touch(self, digest: str) -> None:
        """Mark as used now (garbage collection keeps recently used environments)."""
        marker = self.root / digest / MARKER
        if marker.exists():
            os.utime(marker)

    async def ensure(
        self, requirements: list[str], python_version: str | None
    ) -> AsyncIterator[str | Environment]:
        """Yield uv's output lines while building (nothing when cached), then the
        Environment. Concurrent calls for the same environment build it once."""
        version, interpreter = find_interpreter(python_version)
        digest = digest_of(requirements, version)
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            env = self.get(digest)
            if env is None:
                async for line in self._build(digest, requirements, version, interpreter):
                    yield line
                env = self.get(digest)
                assert env is not None
        self.touch(digest)
        yield env

    async def _build(
        self, digest: str, requirements: list[str], version: str, interpreter: Path
    ) -> AsyncIterator[str]:
        path = self.root / digest
        shutil.rmtree(path, ignore_errors=True)  # a build that died half-way
        self.root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        uv = uv_binary()
        yield f"creating a Python {version} environment"
        steps = [
            [uv, "venv", "--quiet", "--python", str(interpreter), str(path)],
            [uv, "pip", "install", "--python", str(path / "bin" / "python"),
             *requirements, *RUNTIME_REQUIREMENTS],
        ]  # fmt: skip
        try:
            for step in steps:
                output: list[str] = []
                proc = await asyncio.create_subprocess_exec(
                    *step, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                    env=_uv_env(),
                )  # fmt: skip
                assert proc.stdout is not None
                async for raw in proc.stdout:
                    line = raw.decode(errors="replace").rstrip()
                    output.append(line)
                    yield line
                if await proc.wait() != 0:
                    raise EnvironmentBuildError(_explain("\n".join(output[-25:]), requirements))
            (path / MARKER).write_text(json.dumps({
                "requirements": requirements, "python": version, "tidal": tidal.__version__,
                "built_seconds": round(time.monotonic() - started, 2),
            }))  # fmt: skip
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        yield f"environment ready in {time.monotonic() - started:.1f}s"

    def collect_garbage(self, in_use: set[str], older_than_seconds: float) -> list[str]:
        """Remove environments no current revision uses and nobody used for a while."""
        removed = []
        now = time.time()
        for path in self.root.glob("*"):
            marker = path / MARKER
            if path.name in in_use or path.name in self._locks:
                continue
            age = now - marker.stat().st_mtime if marker.exists() else older_than_seconds
            if age >= older_than_seconds:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        return removed


def _explain(output: str, requirements: list[str]) -> str:
    runtime_names = {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0] for r in RUNTIME_REQUIREMENTS}
    pinned = [r for r in requirements if re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0] in runtime_names]
    if pinned and "unsatisfiable" in output:
        return (
            f"the app's requirements ({', '.join(pinned)}) conflict with what tidal's runtime "
            f"needs ({', '.join(RUNTIME_REQUIREMENTS)}). uv says:\n{output}"
        )
    return f"building the app's environment failed. uv says:\n{output}"


def runner_setup(data_dir: Path, env: Environment | None) -> tuple[Path, dict[str, str]]:
    """The interpreter and the environment variables a runner starts with."""
    if env is None:
        python, bin_dir = Path(sys.executable), Path(sys.executable).parent
        extra: dict[str, str] = {}
    else:
        python, bin_dir = env.python, env.path / "bin"
        # Only tidal itself joins the app's environment; its packages are the app's.
        extra = {"VIRTUAL_ENV": str(env.path), "PYTHONPATH": str(runtime_path(data_dir))}
    # So that a body running ["uvicorn", ...] finds the environment's own.
    extra["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return python, extra
