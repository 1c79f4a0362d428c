"""Pure parts of image building: the content address of an image, the runtime layer's
Dockerfile, and the probe that reads an image's Python. No I/O beyond reading files."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from tidal.spec import ImageSpec

# Where the runtime's packages live inside an image, and the `.pth` file that puts
# them at the END of sys.path: the user's own installed packages (their pins) win.
RUNTIME_DIR = "/opt/tidal/site"
PTH_NAME = "zz-tidal-runtime.pth"
# The app's `requirements`, installed on top of the image (first on sys.path).
REQUIREMENTS_DIR = "/opt/tidal/requirements"
MIN_PYTHON = (3, 10)
# Tags of images tidal built: `tidal-app:<key>` (final), `tidal-user:<key>` (user's layers).
FINAL_REPO = "tidal-app"
USER_REPO = "tidal-user"
SKIP_DIRS = frozenset({".git", "__pycache__"})

# Run with the image's own `python3`: one JSON line saying what the runtime layer needs.
PROBE = (
    "import json, platform, sys; "
    "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
    "'machine': platform.machine(), 'libc': platform.libc_ver()[0]}))"
)

# Run at build time, exec form (no shell needed): write the .pth into the LAST
# site-packages folder, so that every folder the image already had comes first.
_INSTALL = (
    "import os, site, sys; "
    f"assert sys.version_info >= {MIN_PYTHON!r}, "
    f"'tidal needs Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} in the image'; "
    "d = site.getsitepackages()[-1]; os.makedirs(d, exist_ok=True); "
    f"open(os.path.join(d, {PTH_NAME!r}), 'w').write({RUNTIME_DIR!r} + '\\n'); "
    # Bytecode now, by the image's own Python: runners can't write it (read-only,
    # PYTHONDONTWRITEBYTECODE) and compiling pydantic at each cold start costs ~0.3 s.
    f"import compileall; compileall.compile_dir({RUNTIME_DIR!r}, quiet=1, workers=0)"
)


def digest_json(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def context_digest(folder: Path) -> str:
    """A digest of every file's relative path, mode bit and content under `folder`."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            h.update(rel.encode() + b"\0")
            h.update(b"x" if os.access(path, os.X_OK) else b"-")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def image_key(
    image: ImageSpec,
    runtime: str,
    context: str | None = None,
    pulled_id: str | None = None,
    requirements: Sequence[str] = (),
) -> str:
    """The content address of the final image: the same key never builds twice.
    `runtime`: the runtime's digest (tidal's code and its pinned requirements);
    `context`: the build context's digest; `pulled_id`: a registry image's id."""
    key: dict[str, object] = {
        "kind": image.kind,
        "dockerfile": image.dockerfile,
        "build_args": dict(sorted(image.build_args.items())),
        "context": context,
        "ref": image.ref,
        "pulled": pulled_id,
        "runtime": runtime,
    }
    if requirements:  # (absent otherwise: keys of images built before stay valid)
        key["requirements"] = sorted(requirements)
    return digest_json(key)[:32]


def runtime_layer_dockerfile(base: str, user: str, key: str, requirements: bool = False) -> str:
    """The final layer tidal adds on top of the user's image: the runtime's packages
    (pre-installed on the host for the image's Python) and the .pth that finds them.
    `user` is the image's own USER, restored after (empty: root). `requirements`: the
    app's requirements (also pre-installed) go FIRST on sys.path, as a `pip install`
    on top of the image would have them."""
    lines = [
        f"FROM {base}",
        "USER root",
        f"COPY tidal-runtime {RUNTIME_DIR}",
        f"RUN {json.dumps(['python3', '-c', _INSTALL])}",
    ]
    if requirements:
        lines += [
            f"COPY tidal-requirements {REQUIREMENTS_DIR}",
            f"ENV PYTHONPATH={REQUIREMENTS_DIR}${{PYTHONPATH:+:$PYTHONPATH}}",
            "RUN " + json.dumps(["python3", "-c", "import compileall; compileall.compile_dir("
                                 f"{REQUIREMENTS_DIR!r}, quiet=1, workers=0)"]),
        ]  # fmt: skip
    # Last, with every package in place: fail the build, not each runner, when the
    # user's pins are too old for the runtime (tidal.runtime.image_check).
    lines.append("RUN " + json.dumps(["python3", "-m", "tidal.runtime.image_check"]))
    if user:
        lines.append(f"USER {user}")
    lines.append(f'LABEL tidal.image-key="{key}"')
    return "\n".join(lines) + "\n"


def python_problem(probe_output: str | None) -> str | None:
    """Why an image can't run tidal's runtime (from PROBE's output), or None."""
    if probe_output is None:
        return (
            "the image has no `python3` on its PATH. tidal runs its runtime with the "
            f"image's own Python: use a base image with Python >= {MIN_PYTHON[0]}."
            f"{MIN_PYTHON[1]} (for example `python:3.11-slim`), or install it in the "
            "Dockerfile (`apt-get install -y python3`)"
        )
    try:
        info = json.loads(probe_output.strip().splitlines()[-1])
        major, minor = (int(p) for p in str(info["version"]).split("."))
    except (ValueError, KeyError, IndexError):
        return f"the image's `python3` did not answer as expected: {probe_output[-300:]!r}"
    if (major, minor) < MIN_PYTHON:
        return (
            f"the image's Python is {major}.{minor}; tidal's runtime needs Python >= "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}: use a newer base image"
        )
    if info.get("libc") not in ("glibc", ""):
        return (
            f"the image's C library is {info.get('libc')!r}; tidal's runtime packages are "
            "built for glibc (manylinux): use a Debian, Ubuntu or similar base image"
        )
    return None
