"""Build or pull an app's image, then add tidal's runtime layer; content-addressed.

The final image is tagged `tidal-app:<key>` (tidal.images.keys.image_key): a deploy
whose key is already tagged on the engine starts no build at all. Otherwise the
user's Dockerfile is built first (the engine's legacy builder, streaming its log),
its `python3` probed, and one more build adds the runtime (tidal.images.runtime_site)
on top. The docker SDK blocks, so every call runs in a thread.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tidal.images.auth import RegistryAuthError, auth_config
from tidal.images.keys import (
    FINAL_REPO,
    PROBE,
    SKIP_DIRS,
    USER_REPO,
    context_digest,
    image_key,
    python_problem,
    runtime_layer_dockerfile,
)
from tidal.images.runtime_site import RuntimeSiteError, RuntimeSites, runtime_digest
from tidal.runtime.image_check import PREFIX as CHECK_PREFIX
from tidal.spec import ImageSpec

T = TypeVar("T")
LAST_LINES = 15


class ImageBuildError(Exception):
    """The image could not be built or pulled; the message is meant for the user."""


@dataclass(frozen=True)
class BuiltImage:
    ref: str  # the tag runners start from: tidal-app:<key>
    key: str
    cached: bool
    seconds: float


async def iterate_in_thread(make: Callable[[], Iterable[T]]) -> AsyncIterator[T]:
    """Iterate a blocking iterator in its own thread, yielding its items here."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def work() -> None:
        try:
            for item in make():
                loop.call_soon_threadsafe(queue.put_nowait, ("item", item))
        except BaseException as exc:
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
        else:
            loop.call_soon_threadsafe(queue.put_nowait, ("done", None))

    threading.Thread(target=work, name="tidal-docker-stream", daemon=True).start()
    while True:
        kind, value = await queue.get()
        if kind == "done":
            return
        if kind == "error":
            raise value
        yield value


def context_tar(dockerfile: str, folder: Path | None, *extra: Path) -> bytes:
    """A build context: `folder`'s files (if any), each `extra` folder under its own
    name, and the Dockerfile text as `.tidal.Dockerfile` (so a context's own
    Dockerfile is kept)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for root in [p for p in (folder, *extra) if p is not None]:
            prefix = "" if root is folder else root.name
            for dirpath, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
                for name in sorted(files):
                    path = Path(dirpath) / name
                    arcname = os.path.join(prefix, path.relative_to(root).as_posix())
                    tar.add(path, arcname=arcname, recursive=False)
        data = dockerfile.encode()
        info = tarfile.TarInfo(".tidal.Dockerfile")
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# A build step's first line: Docker's "Step 2/5 : RUN ...", Buildah's (Podman's)
# "[1/2] STEP 2/5: RUN ..."; and lines that only name intermediate images.
_STEP = re.compile(r"(?:\[\d+/\d+\] )?(?:Step|STEP) \d+/\d+ ?:")
_NOISE = (" ---> ", "--> ", "Removing intermediate container")


class BuildLog:
    """Turns the engine's build stream into lines, and remembers the failing step."""

    def __init__(self) -> None:
        self.step = ""
        self.lines: list[str] = []
        self.image_id: str | None = None

    def feed(self, chunk: Mapping[str, Any]) -> tuple[list[str], str | None]:
        """(lines to show, error message or None)."""
        if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
            self.image_id = str(chunk["aux"]["ID"])
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            return [], str(detail).strip()
        shown = []
        for line in str(chunk.get("stream", "")).splitlines():
            line = line.rstrip()
            if not line or line.startswith(_NOISE):
                continue
            if _STEP.match(line):
                self.step = line
            self.lines = [*self.lines[-(LAST_LINES - 1) :], line]
            shown.append(line)
        return shown, None

    def failure(self, error: str) -> str:
        at = f" at {self.step}" if self.step else ""
        tail = "\n".join(self.lines[-LAST_LINES:])
        return f"building the image failed{at}: {error}\nLast lines of the build:\n{tail}"


def runtime_layer_failure(lines: Sequence[str], error: str) -> str:
    """Why adding the runtime layer failed: the image check's verdict when it gave one."""
    verdicts = [line[len(CHECK_PREFIX) :] for line in lines if line.startswith(CHECK_PREFIX)]
    if verdicts:
        return "the image can't run tidal's runtime: " + "; ".join(verdicts)
    tail = "\n".join(lines[-LAST_LINES:])
    return f"adding tidal's runtime layer failed: {error}\nLast lines of the build:\n{tail}"


class ImageBuilder:
    def __init__(self, client: Any, data_dir: Path) -> None:
        self.client = client  # docker.DockerClient
        self.sites = RuntimeSites(data_dir)
        self._locks: dict[str, asyncio.Lock] = {}

    def _exists(self, ref: str) -> bool:
        import docker.errors

        try:
            self.client.images.get(ref)
            return True
        except docker.errors.ImageNotFound:
            return False

    async def ensure(
        self,
        image: ImageSpec,
        context: Path | None,
        secrets: Mapping[str, str],
        requirements: Sequence[str] = (),
        runtime_layer: bool = True,
    ) -> AsyncIterator[str | BuiltImage]:
        """Yield log lines, then the BuiltImage. `context`: the uploaded build context
        (from_dockerfile); `secrets`: the owner's, for registry credentials;
        `requirements`: the app's, installed into the image on top of its own packages.
        `runtime_layer=False` (an image-only app): the user's image as it is, which
        needs no Python."""
        started = time.monotonic()
        runtime = await asyncio.to_thread(runtime_digest) if runtime_layer else "none"
        pulled: str | None = None
        if image.kind == "registry":
            assert image.ref is not None
            async for line in self._pull(image, secrets):
                yield line
            pulled = str((await asyncio.to_thread(self.client.images.get, image.ref)).id)
        context_id = await asyncio.to_thread(context_digest, context) if context else None
        key = image_key(
            image, runtime, context=context_id, pulled_id=pulled, requirements=requirements
        )
        final = f"{FINAL_REPO}:{key}"
        if not runtime_layer:
            final = str(image.ref) if image.kind == "registry" else f"{USER_REPO}:{key}"
        async with self._locks.setdefault(key, asyncio.Lock()):
            if await asyncio.to_thread(self._exists, final):
                yield BuiltImage(final, key, True, time.monotonic() - started)
                return
            if image.kind == "registry":
                base = str(image.ref)
            else:
                base = f"{USER_REPO}:{key}"
                async for line in self._build_user(image, context, base):
                    yield line
            if not runtime_layer:
                yield BuiltImage(base, key, False, time.monotonic() - started)
                return
            yield "checking the image's Python"
            probe, user = await asyncio.to_thread(self._probe, base)
            problem = python_problem(probe)
            if problem:
                raise ImageBuildError(problem)
            assert probe is not None
            info = json.loads(probe.strip().splitlines()[-1])
            yield f"adding tidal's runtime for Python {info['version']} ({info['machine']})"
            folders = []
            try:
                site = await self.sites.ensure(info["version"], info["machine"])
                folders.append(site / "tidal-runtime")
                if requirements:
                    yield f"installing the app's requirements: {' '.join(requirements)}"
                    wanted = await self.sites.ensure_requirements(
                        requirements, info["version"], info["machine"]
                    )
                    folders.append(wanted / "tidal-requirements")
            except RuntimeSiteError as exc:
                raise ImageBuildError(str(exc)) from None
            dockerfile = runtime_layer_dockerfile(base, user, key, bool(requirements))
            tar = await asyncio.to_thread(context_tar, dockerfile, None, *folders)
            log = BuildLog()
            async for chunk in self._build_stream(tar, final, {}):
                _, error = log.feed(chunk)
                if error:
                    raise ImageBuildError(runtime_layer_failure(log.lines, error))
        yield BuiltImage(final, key, False, time.monotonic() - started)

    async def _build_user(
        self, image: ImageSpec, context: Path | None, tag: str
    ) -> AsyncIterator[str]:
        if image.kind == "dockerfile_str":
            text = image.dockerfile or ""
        else:
            if context is None or image.path is None:
                raise ImageBuildError(
                    "from_dockerfile: the build context was not uploaded; deploy with the "
                    "tidal CLI, which uploads the Dockerfile's folder"
                )
            dockerfile = context / image.path
            if not dockerfile.is_file():
                raise ImageBuildError(f"from_dockerfile: {image.path} is not in the build context")
            text = dockerfile.read_text()
        tar = await asyncio.to_thread(context_tar, text, context)
        log = BuildLog()
        async for chunk in self._build_stream(tar, tag, image.build_args):
            lines, error = log.feed(chunk)
            for line in lines:
                yield line
            if error:
                raise ImageBuildError(log.failure(error))

    def _build_stream(
        self, tar: bytes, tag: str, build_args: Mapping[str, str]
    ) -> AsyncIterator[Mapping[str, Any]]:
        def make() -> Iterator[Mapping[str, Any]]:
            stream: Iterator[Mapping[str, Any]] = self.client.api.build(
                fileobj=io.BytesIO(tar), custom_context=True, dockerfile=".tidal.Dockerfile",
                tag=tag, buildargs=dict(build_args), rm=True, forcerm=True, decode=True,
                labels={"tidal.built": "1"},
            )  # fmt: skip
            return stream

        return iterate_in_thread(make)

    async def _pull(self, image: ImageSpec, secrets: Mapping[str, str]) -> AsyncIterator[str]:
        import docker.errors

        ref = str(image.ref)
        try:
            auth = auth_config(ref, image.auth_secret, secrets) if image.auth_secret else None
        except RegistryAuthError as exc:
            raise ImageBuildError(str(exc)) from None
        repo, tag = _split_ref(ref)
        yield f"pulling {ref}"

        def make() -> Iterator[Mapping[str, Any]]:
            stream: Iterator[Mapping[str, Any]] = self.client.api.pull(
                repo, tag=tag, stream=True, decode=True, auth_config=auth
            )
            return stream

        shown: set[str] = set()
        try:
            async for chunk in iterate_in_thread(make):
                if "error" in chunk:
                    raise ImageBuildError(f"pulling {ref} failed: {chunk['error']}")
                line = " ".join(str(chunk[k]) for k in ("id", "status") if chunk.get(k))
                if line and "progress" not in chunk and line not in shown:
                    shown.add(line)
                    yield line
        except docker.errors.APIError as exc:
            hint = "" if image.auth_secret else " (a private registry needs auth=SECRET_NAME)"
            raise ImageBuildError(f"pulling {ref} failed: {exc.explanation or exc}{hint}") from None

    def _probe(self, ref: str) -> tuple[str | None, str]:
        """(PROBE's output from the image's python3, or None if it has none; its USER)."""
        import docker.errors

        user = str(self.client.images.get(ref).attrs.get("Config", {}).get("User") or "")
        try:
            container = self.client.containers.create(
                ref, entrypoint=["python3", "-c", PROBE], network_disabled=True,
                labels={"tidal.probe": "1"},
            )  # fmt: skip
        except docker.errors.APIError:
            return None, user
        try:
            try:
                container.start()
            except docker.errors.APIError:
                return None, user  # "executable file not found"
            code = container.wait(timeout=60).get("StatusCode", 1)
            output = container.logs(stdout=True, stderr=True).decode(errors="replace")
            return (output if code == 0 else None), user
        finally:
            container.remove(force=True)


def _split_ref(ref: str) -> tuple[str, str]:
    """("repo", "tag") of an image reference; a digest stays whole in repo."""
    if "@" in ref:
        return ref, ""
    name, _, last = ref.rpartition("/")
    if ":" in last:
        repo_last, tag = last.split(":", 1)
        return (f"{name}/{repo_last}" if name else repo_last), tag
    return ref, "latest"
