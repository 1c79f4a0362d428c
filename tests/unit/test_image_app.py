"""tidal.ImageApp: an image that is its own server; what it takes and what it refuses."""

from __future__ import annotations

import pytest

import tidal
from tidal import ContainerImage
from tidal.spec import AppOptions, AppSpec, InvalidOptionError


def test_an_image_app_takes_fal_options() -> None:
    web = tidal.ImageApp(ContainerImage.from_registry("nginx:1.27"), exposed_port=80,
                         keep_alive=60, max_concurrency=3, machine_type="S")  # fmt: skip
    assert web.options.exposed_port == 80 and web.options.keep_alive == 60
    assert web.options.image is not None and web.options.image.ref == "nginx:1.27"
    spec = AppSpec(name="web", entry="app.py::web", kind="image", options=web.options)
    assert spec.kind == "image"


@pytest.mark.parametrize("option", ["requirements", "setup_function", "python_version"])
def test_options_that_need_python_are_refused(option: str) -> None:
    value = ["x"] if option == "requirements" else "x"
    with pytest.raises(InvalidOptionError, match=f"{option} need a Python entry"):
        tidal.ImageApp(ContainerImage.from_registry("nginx:1.27"), exposed_port=80,
                       **{option: value})  # fmt: skip


def test_bad_input_is_named() -> None:
    with pytest.raises(InvalidOptionError, match="give the image as a ContainerImage"):
        tidal.ImageApp("nginx:1.27", exposed_port=80)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="exposed_port"):
        tidal.ImageApp(ContainerImage.from_registry("nginx"), exposed_port=0)
    with pytest.raises(ValueError, match=r"needs image= .* and exposed_port="):
        AppSpec(name="web", entry="app.py::web", kind="image", options=AppOptions())


def test_the_spec_survives_its_json_round_trip() -> None:
    """What the CLI sends (every field written out) is what the platform accepts."""
    web = tidal.ImageApp(ContainerImage.from_registry("nginx:1.27"), exposed_port=80)
    spec = AppSpec(name="web", entry="app.py::web", kind="image", options=web.options)
    assert AppSpec.model_validate(spec.model_dump(mode="json")) == spec
    with pytest.raises(ValueError, match="requirements: an image-only app runs its image"):
        AppSpec.model_validate(
            {**spec.model_dump(mode="json"),
             "options": {**web.options.model_dump(mode="json"), "requirements": ["x"]}}
        )  # fmt: skip
