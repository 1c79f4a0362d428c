"""From `FILE::NAME` on the user's disk to a revision on the platform."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.status import Status

from tidal.cli.client import Client, CLIError
from tidal.compat import install_fal_shim
from tidal.control.names import app_name_problem
from tidal.control.openapi import openapi_problem
from tidal.images.dockerignore import DockerIgnore, read_patterns
from tidal.sdk.app import App, endpoints
from tidal.sdk.function import Function
from tidal.sdk.image_app import ImageApp
from tidal.sdk.loader import load_module
from tidal.spec import AppSpec, HealthCheckSpec, ImageSpec, InvalidOptionError
from tidal.storage.bundles import BundleError, make_bundle, python_files
from tidal.toolkit.stores import files_to_ship

BUNDLE_LIMIT = 50 * 1024 * 1024


Target = Function[Any, Any] | type[App] | ImageApp


def load_target(target: str) -> tuple[Path, str, Target]:
    """Import the user's file here, as fal does, so option errors show before anything uploads."""
    file_part, _, name = target.partition("::")
    path = Path(file_part).resolve()
    if not path.is_file():
        raise CLIError(f"{file_part} is not a file; give the app as FILE.py::NAME")
    install_fal_shim()  # `import fal` works unchanged where the real fal is not installed
    try:
        module = load_module(path.parent, path.name)
    except InvalidOptionError as exc:
        raise CLIError(f"{path.name}: {exc}") from None
    except Exception as exc:
        raise CLIError(f"importing {path.name} failed: {type(exc).__name__}: {exc}") from exc
    found: dict[str, Target] = {
        k: v
        for k, v in vars(module).items()
        if isinstance(v, Function | ImageApp)
        or (
            isinstance(v, type)
            and issubclass(v, App)
            and v is not App
            and v.__module__ == module.__name__
        )
    }
    if not name:
        if len(found) != 1:
            names = ", ".join(sorted(found)) or "none"
            raise CLIError(
                f"{path.name} defines {len(found)} tidal apps ({names}); name one as {path.name}::NAME"
            )
        name = next(iter(found))
    if name not in found:
        raise CLIError(
            f"{path.name} has no @tidal.function, tidal.App or tidal.ImageApp named {name!r} (found: {', '.join(sorted(found)) or 'none'})"
        )
    return path, name, found[name]


def default_app_name(name: str, target: Target) -> str:
    """An App's `name=` (else its class name in kebab case), a function's name with dashes."""
    if isinstance(target, type):
        if target.app_name:
            return target.app_name
        name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower()
    return name.replace("_", "-")


def build_spec(path: Path, name: str, target: Target, app: str, digest: str) -> AppSpec:
    entry = f"{path.name}::{name}"
    if isinstance(target, ImageApp):  # the image's own command serves; nothing to import
        try:
            return AppSpec(name=app, entry=entry, kind="image", options=target.options,
                           bundle_digest=digest)  # fmt: skip
        except ValueError as exc:
            raise CLIError(f"{name}: {exc}") from None
    if isinstance(target, Function):
        # A server's own API: described in metadata, else fetched from its /openapi.json
        # by the platform once a runner is up.
        document = target.options.metadata.get("openapi")
        if document is not None and (problem := openapi_problem(document)):
            raise CLIError(
                f"{name}: metadata['openapi'] is not a valid OpenAPI document: {problem}"
            )
        return AppSpec(name=app, entry=entry, kind="function", options=target.options,
                       bundle_digest=digest, openapi=document)  # fmt: skip
    from tidal.runtime.app_server import openapi_of

    try:
        openapi = openapi_of(target)
    except Exception as exc:
        raise CLIError(
            f"{name}'s endpoints do not make a valid API: {type(exc).__name__}: {exc}"
        ) from None
    health = next(
        (HealthCheckSpec(path=e.path, method=e.method, **vars(e.health_check))
         for _, e in endpoints(target) if e.health_check),
        None,
    )  # fmt: skip
    return AppSpec(name=app, entry=entry, kind="app", options=target.options(),
                   bundle_digest=digest, openapi=openapi, health_check=health)  # fmt: skip


def local_modules(names: list[str]) -> dict[str, Path]:
    """The files of each `local_python_modules` entry, by their name in the bundle."""
    files: dict[str, Path] = {}
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin in (None, "built-in", "frozen"):
            raise CLIError(
                f"local_python_modules: cannot find {name!r} from here; it must be importable "
                "where you run tidal deploy (a module or package next to your app, or on "
                "PYTHONPATH)"
            )
        origin = Path(spec.origin or "")
        top = name.replace(".", "/")
        if spec.submodule_search_locations:  # a package: all of its Python files
            root = Path(next(iter(spec.submodule_search_locations)))
            files.update({f"{top}/{p.relative_to(root).as_posix()}": p for p in python_files(root)})
        else:
            files[f"{top}.py"] = origin
        # A dotted name needs its parent packages' __init__ files too.
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = importlib.util.find_spec(".".join(parts[:i]))
            if parent is not None and parent.origin:
                files["/".join(parts[:i]) + "/__init__.py"] = Path(parent.origin)
    return files


def build_environment(client: Client, spec: AppSpec, status: Status) -> None:
    """Have the platform build the app's environment now, showing uv's progress."""
    options = spec.options
    if not (options.requirements or options.python_version):
        return
    status.update("Building the environment…")
    for line in client.stream_lines(
        "/api/v1/environments",
        method="POST",
        json={"requirements": options.requirements, "python_version": options.python_version},
    ):
        event = json.loads(line)
        if "error" in event:
            raise CLIError(event["error"])
        if "log" in event:
            status.update(f"Building the environment… [dim]{event['log'][-80:]}[/]")


def context_zip(folder: Path, limit: int, ignore: DockerIgnore | None = None) -> tuple[bytes, str]:
    """A Dockerfile's folder (the build context) as a reproducible zip, and its digest;
    `ignore`: the .dockerignore patterns that leave files out."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in (".git", "__pycache__"))
            for name in sorted(files):
                path = Path(root) / name
                if ignore is not None and ignore.ignored(path.relative_to(folder).as_posix()):
                    continue
                info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), (1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
                if buf.tell() > limit:
                    raise CLIError(
                        f"the build context {folder} is over {limit // 2**20} MB: keep the "
                        "Dockerfile in a folder holding only what the image needs"
                    )
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def upload_context_dir(client: Client, image: ImageSpec) -> ImageSpec:
    """from_dockerfile_str(context_dir=...): ship that folder, less its .dockerignore."""
    folder = Path(image.context_dir or "")
    if not folder.is_dir():
        raise CLIError(f"from_dockerfile_str: context_dir {str(folder)!r} is not a folder")
    ignore = DockerIgnore(read_patterns(folder, image.dockerignore))
    data, digest = context_zip(folder, BUNDLE_LIMIT, ignore)
    if not client.has_bundle(digest):
        client.put_bundle(digest, data)
    return image.model_copy(update={"context": digest})


def upload_context(client: Client, image: ImageSpec, app_dir: Path) -> ImageSpec:
    """from_dockerfile(path): ship the Dockerfile's folder as the build context, by digest.
    A relative path is looked up next to the app's file first, then in the current folder."""
    given = Path(image.path or "")
    candidates = [given] if given.is_absolute() else [app_dir / given, Path.cwd() / given]
    dockerfile = next((p.resolve() for p in candidates if p.is_file()), None)
    if dockerfile is None:
        raise CLIError(
            f"from_dockerfile({image.path!r}): no such file next to the app ({app_dir}) "
            "or in the current folder"
        )
    data, digest = context_zip(dockerfile.parent, BUNDLE_LIMIT)
    if not client.has_bundle(digest):
        client.put_bundle(digest, data)
    return image.model_copy(update={"path": dockerfile.name, "context": digest})


def build_image(client: Client, spec: AppSpec, console: Console, status: Status) -> None:
    """Have the platform build (or find) the app's image now, streaming the build log."""
    image = spec.options.image
    if image is None:
        return
    status.update("Building the container image…")
    for line in client.stream_lines(
        "/api/v1/images",
        method="POST",
        json={
            "image": image.model_dump(mode="json"),
            "requirements": spec.options.requirements,
            "runtime_layer": spec.kind != "image",
        },
    ):
        event = json.loads(line)
        if "error" in event:
            raise CLIError(event["error"])
        if "log" in event:
            text = event["log"]
            console.print(f"  [dim]{escape(text)}[/]", highlight=False)
            if text.startswith("Step "):
                status.update(f"Building the container image… [bold]{escape(text[:80])}[/]")
        if "ready" in event:
            how = "cached" if event["cached"] else f"built in {event['seconds']:.1f}s"
            console.print(f"[green]✓[/] Image {event['ready']} ({how})")


def empty_bundle() -> tuple[bytes, str]:
    """The code bundle of an app with no code (every revision needs one)."""
    buf = io.BytesIO()
    zipfile.ZipFile(buf, "w").close()
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def image_only(
    image: str | None, dockerfile: str | None, port: int | None, app_name: str | None
) -> tuple[Path, str, ImageApp]:
    """`tidal deploy --image REF | --dockerfile PATH --port N`: an image-only app."""
    from tidal.sdk.image import ContainerImage

    if (image is None) == (dockerfile is None):
        raise CLIError("give the image as --image REF or --dockerfile PATH, not both")
    if port is None:
        raise CLIError("an image-only app needs --port: the port its own command serves on")
    spec = (ContainerImage.from_registry(image) if image
            else ContainerImage.from_dockerfile(dockerfile or ""))  # fmt: skip
    if app_name is None:
        raise CLIError("an image-only app from the command line needs --app-name NAME")
    try:
        return Path.cwd() / "Dockerfile", app_name, ImageApp(spec, exposed_port=port)
    except (InvalidOptionError, ValueError) as exc:
        raise CLIError(str(exc)) from None


def deploy(
    client: Client,
    target: str,
    app_name: str | None,
    console: Console,
    public: bool = False,
    local: bool = False,
    reset_scale: bool = False,
    loaded: tuple[Path, str, Target] | None = None,
) -> dict[str, Any]:
    """`local`: run on the local backend, ignoring the app's container image.
    `reset_scale`: drop the app's live scaling changes; the code's options apply.
    `loaded`: an app made on the command line (`--image`/`--dockerfile`), no file."""
    with console.status("Loading the app…") as status:
        path, name, found = loaded or load_target(target)
        return deploy_found(
            client, path, name, found, app_name, status, console, public, local, reset_scale,
            code=loaded is None,
        )  # fmt: skip


def code_bundle(path: Path, found: Target) -> tuple[bytes, str]:
    """The app's code bundle (its folder's .py files, local modules, files saved at
    import) and its digest."""
    options = found.options if isinstance(found, Function | ImageApp) else found.options()
    # Files the app saved at import (File.from_path) are imported again in runners.
    extra = {**files_to_ship(path.parent), **local_modules(options.local_python_modules)}
    try:
        return make_bundle(path.parent, BUNDLE_LIMIT, extra)
    except BundleError as exc:
        raise CLIError(str(exc)) from None


def deploy_found(
    client: Client,
    path: Path,
    name: str,
    found: Target,
    app_name: str | None,
    status: Status,
    console: Console,
    public: bool = False,
    local: bool = False,
    reset_scale: bool = False,
    code: bool = True,
) -> dict[str, Any]:
    """Deploy `found`, already imported from `path` where it is named `name`.
    `code=False`: an app made on the command line (`--image`), with an empty bundle."""
    if isinstance(found, ImageApp) and local:
        raise CLIError(
            f"{name} is an image-only app: its image is what runs, on the docker "
            "backend; --local cannot run it"
        )
    app = app_name or default_app_name(name, found)
    if problem := app_name_problem(app):
        raise CLIError(problem)
    status.update("Bundling the code…")
    data, digest = code_bundle(path, found) if code else empty_bundle()
    if not client.has_bundle(digest):
        status.update(f"Uploading the code bundle ({len(data) / 1024:.0f} KiB)…")
        client.put_bundle(digest, data)
    spec = build_spec(path, name, found, app, digest)
    image = spec.options.image
    if image is not None and image.kind == "dockerfile" and not local:
        status.update("Uploading the build context…")
        image = upload_context(client, image, path.parent)
        spec.options = spec.options.model_copy(update={"image": image})
    elif image is not None and image.context_dir is not None and not local:
        status.update("Uploading the build context…")
        image = upload_context_dir(client, image)
        spec.options = spec.options.model_copy(update={"image": image})
    if local or spec.options.image is None:
        build_environment(client, spec, status)
    else:  # the requirements go into the image
        build_image(client, spec, console, status)
    status.update(f"Deploying {app}…")
    view: dict[str, Any] = client.post(
        "/api/v1/apps",
        json={
            "spec": spec.model_dump(mode="json"),
            "public": public,
            "backend": "local" if local else None,
            "reset_scale": reset_scale,
        },
        timeout=None,
    )
    return view
