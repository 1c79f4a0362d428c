"""The deploy's image step: build or pull a revision's image on the platform's engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tidal.backends.choice import DOCKER, DOCKER_HINT
from tidal.backends.registry import Backends
from tidal.images.builder import BuiltImage, ImageBuildError
from tidal.spec import ImageSpec


@dataclass(frozen=True)
class ImageStep:
    backends: Backends
    bundles_dir: Path  # where uploaded Dockerfile contexts are unpacked
    secrets: Callable[[str], dict[str, str]]  # an owner's secrets (registry credentials)

    async def build(
        self,
        owner: str,
        image: ImageSpec,
        requirements: Sequence[str] = (),
        runtime_layer: bool = True,
    ) -> AsyncIterator[str | BuiltImage]:
        """Yield build log lines, then the BuiltImage; ImageBuildError says what failed.
        `runtime_layer=False`: an image-only app's image, as it is (no tidal runtime)."""
        from tidal.backends.docker import DockerBackend

        backend = self.backends.usable.get(DOCKER)
        if not isinstance(backend, DockerBackend):
            why = self.backends.unusable.get(DOCKER, "it is not enabled on this platform")
            raise ImageBuildError(
                f"this app has a container image, which needs the docker backend, but {why}. "
                f"To fix: {DOCKER_HINT}."
            )
        context = None
        if image.kind == "dockerfile_str" and image.context is not None:  # context_dir=
            context = self.bundles_dir / image.context
            if not context.is_dir():
                raise ImageBuildError("from_dockerfile_str: upload the build context first")
        if image.kind == "dockerfile":
            if image.context is None:
                raise ImageBuildError(
                    "from_dockerfile: the Dockerfile's folder was not uploaded; deploy with "
                    "the tidal CLI, which uploads it"
                )
            context = self.bundles_dir / image.context
            if not context.is_dir():
                raise ImageBuildError("from_dockerfile: upload the build context first")
        secrets = await asyncio.to_thread(self.secrets, owner) if image.auth_secret else {}
        async for item in backend.images.ensure(
            image, context, secrets, requirements, runtime_layer
        ):
            yield item
