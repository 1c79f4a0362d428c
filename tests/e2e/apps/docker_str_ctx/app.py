# A container app written as fal's docs write one: Dockerfile text whose COPY reads
# from context_dir, less the dockerignore patterns. Nothing adapted to tidal.
import os
from pathlib import Path

import fal
from fal.container import ContainerImage

DOCKERFILE = """
FROM tidal-test/debian-python:bookworm
COPY site/ /srv/site/
"""


class StaticSite(fal.App, keep_alive=60):
    machine_type = "XS"
    image = ContainerImage.from_dockerfile_str(
        DOCKERFILE,
        context_dir=Path(__file__).parent / "ctx",
        dockerignore=["**/*.secret", "!site/public.secret", "site/drafts"],
    )

    @fal.endpoint("/files")
    def files(self) -> dict:
        found = []
        for root, _, names in os.walk("/srv/site"):
            found += [os.path.relpath(os.path.join(root, n), "/srv/site") for n in names]
        return {"files": sorted(found)}
