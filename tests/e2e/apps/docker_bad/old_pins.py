import tidal
from tidal import ContainerImage

# An image whose own packages pin pydantic 1 (a stand-in distribution: no network here):
# the deploy must fail at build, naming the pin, not at every runner's start.
DOCKERFILE = """FROM tidal-test/debian-python:bookworm
RUN d=$(python3 -c 'import site; print(site.getsitepackages()[0])') \\
 && mkdir -p $d/pydantic $d/pydantic-1.10.13.dist-info \\
 && echo "VERSION = '1.10.13'" > $d/pydantic/__init__.py \\
 && printf 'Metadata-Version: 2.1\\nName: pydantic\\nVersion: 1.10.13\\n' \\
    > $d/pydantic-1.10.13.dist-info/METADATA
"""


@tidal.function(image=ContainerImage.from_dockerfile_str(DOCKERFILE), exposed_port=8000)
def old_pins() -> None:
    pass
