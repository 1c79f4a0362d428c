import tidal
from tidal import ContainerImage

DOCKERFILE = """FROM tidal-test/debian-python:bookworm
RUN echo preparing
RUN echo "about to fail: no such package" && exit 3
RUN echo never
"""


@tidal.function(image=ContainerImage.from_dockerfile_str(DOCKERFILE), exposed_port=8000)
def broken() -> None:
    pass
