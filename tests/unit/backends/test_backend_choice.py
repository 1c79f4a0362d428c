"""Which backend a deploy gets: the pure rule in tidal.backends.choice."""

from __future__ import annotations

import pytest

from tidal.backends.choice import choose_backend
from tidal.spec import AppOptions, ImageSpec, InvalidOptionError

IMAGE = ImageSpec(kind="registry", ref="python:3.11-slim")


def test_plain_code_runs_on_the_first_usable_backend_that_is_not_docker() -> None:
    choice = choose_backend(AppOptions(), {"docker": 1, "local": 1}, {}, {})
    assert choice.backend == "local" and choice.warnings == []


def test_an_image_needs_docker() -> None:
    assert (
        choose_backend(AppOptions(image=IMAGE), {"local": 1, "docker": 1}, {}, {}).backend
        == "docker"
    )


def test_an_image_without_an_engine_says_how_to_start_one() -> None:
    with pytest.raises(InvalidOptionError) as err:
        choose_backend(
            AppOptions(image=IMAGE), {"local": 1}, {"docker": "no engine at unix:///x.sock"}, {}
        )
    message = str(err.value)
    assert "no engine at unix:///x.sock" in message
    assert "dockerd" in message and "--local" in message


def test_local_flag_ignores_the_image_with_a_warning() -> None:
    choice = choose_backend(AppOptions(image=IMAGE), {"local": 1}, {}, {}, requested="local")
    assert choice.backend == "local"
    assert "image is ignored" in choice.warnings[0]


def test_a_requested_backend_that_is_not_usable_is_named() -> None:
    with pytest.raises(
        InvalidOptionError, match="backend 'ray' cannot run this app: not installed"
    ):
        choose_backend(AppOptions(), {"local": 1}, {"ray": "not installed"}, {}, requested="ray")


def test_machine_types_map_to_backends() -> None:
    options = AppOptions(machine_type=["GPU-H100", "M"])
    usable = {"local": 1, "ray": 1}
    assert choose_backend(options, usable, {}, {"GPU-H100": "ray"}).backend == "ray"
    with pytest.raises(InvalidOptionError, match="machine_backends"):
        choose_backend(options, {"local": 1}, {"ray": "down"}, {"GPU-H100": "ray"})


def test_docker_alone_cannot_run_plain_code() -> None:
    with pytest.raises(InvalidOptionError, match="add image="):
        choose_backend(AppOptions(), {"docker": 1}, {}, {})
