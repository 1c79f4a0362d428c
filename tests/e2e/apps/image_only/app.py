"""An image-only app: the image's own ENTRYPOINT/CMD is the server, no Python entry."""

import tidal
from tidal import ContainerImage

web = tidal.ImageApp(
    ContainerImage.from_dockerfile("Dockerfile"),
    exposed_port=8000,
    keep_alive=300,
    max_concurrency=3,
)
