"""`tidal.ImageApp`: a container image that is the server, with no Python entry.

    web = tidal.ImageApp(ContainerImage.from_dockerfile("Dockerfile"), exposed_port=8000)

runs the image's own ENTRYPOINT/CMD on the docker backend, and the gateway forwards
to `exposed_port` as for any direct server: the same scaling options, readiness
(the port answers HTTP), logs (the container's output) and OpenAPI discovery (its
/openapi.json, if it serves one). fal runs such images with its container kind and
beta9 as a Pod.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidal.spec import AppOptions, ImageSpec

# fal's defaults for `function`, which an image-only app follows.
IMAGE_APP_DEFAULTS: dict[str, Any] = {"keep_alive": 10, "machine_type": "XS"}


class ImageApp:
    """An image-only app: `image` (a ContainerImage) serving HTTP on `exposed_port`,
    with any scaling or machine option of `tidal.function`."""

    def __init__(self, image: ImageSpec, *, exposed_port: int, **options: Any) -> None:
        from tidal.spec import IMAGE_ONLY_UNUSED, ImageSpec, InvalidOptionError, build_options

        if not isinstance(image, ImageSpec):
            raise InvalidOptionError(
                "ImageApp: give the image as a ContainerImage, e.g. "
                "ContainerImage.from_dockerfile('Dockerfile') or .from_registry('nginx:1.27')"
            )
        if unused := IMAGE_ONLY_UNUSED & set(options):
            raise InvalidOptionError(
                f"ImageApp: {', '.join(sorted(unused))} need a Python entry; an image-only "
                "app runs its image as it is: put what it needs into the image"
            )
        self.options: AppOptions = build_options(
            {**options, "image": image, "exposed_port": exposed_port},
            defaults=IMAGE_APP_DEFAULTS,
        )
