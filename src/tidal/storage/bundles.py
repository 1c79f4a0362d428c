"""Code bundles: a zip of the app's folder's Python files, stored by content digest."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

SKIP_DIRS = frozenset({"__pycache__", "node_modules", "venv", "site-packages"})


class BundleError(ValueError):
    pass


def python_files(folder: Path) -> list[Path]:
    """The .py files under `folder`, not in hidden or virtualenv folders."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        found += [Path(root) / name for name in sorted(files) if name.endswith(".py")]
    return found


def make_bundle(
    folder: Path, limit: int, extra: dict[str, Path] | None = None
) -> tuple[bytes, str]:
    """Zip the Python files under `folder`, plus `extra` ({name in the bundle: file})."""
    members = {p.relative_to(folder).as_posix(): p for p in python_files(folder)}
    for arcname, path in (extra or {}).items():
        members.setdefault(arcname, path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, path in sorted(members.items()):
            info = zipfile.ZipInfo(arcname, (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
            if buf.tell() > limit:
                raise BundleError(_too_big(folder, buf.tell(), limit))
    data = buf.getvalue()
    if len(data) > limit:
        raise BundleError(_too_big(folder, len(data), limit))
    return data, hashlib.sha256(data).hexdigest()


def _too_big(folder: Path, size: int, limit: int) -> str:
    return (
        f"the code bundle from {folder} is over {size // 2**20} MB, above the "
        f"{limit // 2**20} MB limit. tidal ships every .py file under the entry file's "
        "folder: deploy from a folder holding only the app's code, and load weights "
        "and data at runtime (from /data or a download) instead of bundling them."
    )


# Files a bundle may hold: each is an inode on the platform's disk.
MAX_MEMBERS = 20_000


def store_bundle(
    root: Path, digest: str, data: bytes, limit: int, unpacked_limit: int | None = None
) -> Path:
    """Check and unpack an uploaded bundle into `root/<digest>/`; idempotent.
    `unpacked_limit`: the most bytes its files may hold once extracted, checked from
    the zip's directory before anything is written (zipfile never extracts a member past
    the size the directory gives it)."""
    if len(data) > limit:
        raise BundleError(_too_big(Path("the upload"), len(data), limit))
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError("the bundle's content does not match its digest; upload it again")
    target = root / digest
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".incoming-"))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = zf.infolist()
            for info in members:
                if info.filename.startswith("/") or ".." in Path(info.filename).parts:
                    raise BundleError(f"the bundle holds an unsafe path: {info.filename!r}")
            unpacked = sum(info.file_size for info in members)
            if unpacked_limit is not None and unpacked > unpacked_limit:
                raise BundleError(
                    f"the code bundle would unpack to {unpacked // 2**20} MB, above the "
                    f"{unpacked_limit // 2**20} MB limit (bundle_unpacked_limit_bytes); "
                    "ship only the app's code, and load data at runtime"
                )
            if len(members) > MAX_MEMBERS:
                raise BundleError(
                    f"the code bundle holds {len(members)} files, above the limit of "
                    f"{MAX_MEMBERS}; ship only the app's code"
                )
            zf.extractall(staging)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # else a concurrent upload of the same bundle won
                raise
    except zipfile.BadZipFile:
        raise BundleError("the bundle is not a zip file") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
