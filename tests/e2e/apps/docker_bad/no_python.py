import tidal
from tidal import ContainerImage

# An image whose `python3` is gone: the deploy must say so, not fail at the first request.
DOCKERFILE = "FROM tidal-test/debian-python:bookworm\nRUN rm -f /usr/bin/python3*\n"


@tidal.function(image=ContainerImage.from_dockerfile_str(DOCKERFILE), exposed_port=8000)
def no_python() -> None:
    pass
