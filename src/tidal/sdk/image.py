from __future__ import annotations

import os
import re
from pathlib import Path

from tidal.spec import ImageSpec

# COPY or ADD of a local path (not `--from=` another stage, not a URL).
_COPIES_LOCAL_FILES = re.compile(
    r"^\s*(COPY|ADD)\s+(?!.*--from)(?!\S*://)", re.IGNORECASE | re.MULTILINE
)


class ContainerImage:
    """Constructors for a runner's container image, as fal's `ContainerImage`.

    They only describe the image; the docker backend builds or pulls it.
    """

    @staticmethod
    def from_dockerfile_str(
        text: str,
        build_args: dict[str, str] | None = None,
        context_dir: str | os.PathLike[str] | None = None,
        dockerignore: list[str] | None = None,
        dockerignore_path: str | os.PathLike[str] | None = None,
    ) -> ImageSpec:
        """An image built from Dockerfile text. `context_dir`: the folder its COPY/ADD
        read from (fal's default: the current folder, when the text copies local
        files), less the `dockerignore` patterns (else `dockerignore_path`'s, else the
        folder's own .dockerignore)."""
        if not text.strip():
            raise ValueError("ContainerImage.from_dockerfile_str: the Dockerfile text is empty")
        if "TIDAL_RUNNER_ID" in os.environ:  # built already; a runner only imports the app
            return ImageSpec(kind="dockerfile_str", dockerfile=text, build_args=build_args or {})
        if context_dir is None and _COPIES_LOCAL_FILES.search(text):
            context_dir = Path.cwd()
        folder = None
        if context_dir is not None:
            folder = Path(context_dir).resolve()
            if not folder.is_dir():
                raise ValueError(
                    f"ContainerImage.from_dockerfile_str: context_dir {str(context_dir)!r} "
                    "is not a folder"
                )
        if dockerignore is None and dockerignore_path is not None:
            dockerignore = Path(dockerignore_path).read_text().splitlines()
        return ImageSpec(
            kind="dockerfile_str", dockerfile=text, build_args=build_args or {},
            context_dir=str(folder) if folder else None, dockerignore=dockerignore,
        )  # fmt: skip

    @staticmethod
    def from_dockerfile(path: str | Path, build_args: dict[str, str] | None = None) -> ImageSpec:
        if not str(path).strip():
            raise ValueError("ContainerImage.from_dockerfile: give the Dockerfile's path")
        return ImageSpec(kind="dockerfile", path=str(path), build_args=build_args or {})

    @staticmethod
    def from_registry(ref: str, auth: str | None = None) -> ImageSpec:
        """`auth` names a platform secret holding the registry credentials."""
        if not ref or any(c.isspace() for c in ref):
            raise ValueError(f"ContainerImage.from_registry: {ref!r} is not an image reference")
        return ImageSpec(kind="registry", ref=ref, auth_secret=auth)
