"""An App with an image and requirements, as fal's container example: the
requirements are installed into the image, on top of what it has."""

import sys

import tidal
from tidal import ContainerImage

DOCKERFILE = "FROM tidal-test/debian-python:bookworm\n"


class WithRequirements(
    tidal.App,
    keep_alive=60,
    image=ContainerImage.from_dockerfile_str(DOCKERFILE),
    requirements=["tabulate==0.9.0"],
):
    @tidal.endpoint("/table")
    def table(self) -> dict[str, object]:
        import tabulate

        return {
            "table": tabulate.tabulate([[1, 2]], tablefmt="plain"),
            "version": tabulate.__version__,
            "from": tabulate.__file__,
            "python": sys.executable,
        }
