from __future__ import annotations

from pathlib import Path

from tidal.spec import ImageSpec


class ContainerImage:
    """Constructors for a runner's container image, as fal's `ContainerImage`.

    They only describe the image; the docker backend builds or pulls it.
    """

    @staticmethod
    def from_dockerfile_str(text: str, build_args: dict[str, str] | None = None) -> ImageSpec:
        if not text.strip():
            raise ValueError("ContainerImage.from_dockerfile_str: the Dockerfile text is empty")
        return ImageSpec(kind="dockerfile_str", dockerfile=text, build_args=build_args or {})

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
