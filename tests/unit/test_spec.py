"""The app options contract: `tidal.function(...)`, ContainerImage and AppSpec.

Every option of fal's `function` parameter table must be accepted and stored in
`.options` with fal's defaults; a bad option must fail at definition time with
an InvalidOptionError whose message names the option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tidal
from tidal import AppOptions, AppSpec, ContainerImage, ImageSpec, InvalidOptionError
from tidal.spec import OPTION_NAMES, SCALING_FIELDS, ScalingOptions, build_options


def _setup() -> None:
    """A setup function; tidal stores it by name."""


def _body(x: int) -> int:
    return x + 1


FAL_FUNCTION_TABLE: dict[str, Any] = {
    "image": ContainerImage.from_registry("python:3.11-slim"),
    "machine_type": "GPU-H100",
    "num_gpus": 2,
    "exposed_port": 8000,
    "requirements": ["numpy==2.0.0", "torch"],
    "keep_alive": 300,
    "min_concurrency": 1,
    "max_concurrency": 4,
    "max_multiplexing": 8,
    "concurrency_buffer": 2,
    "concurrency_buffer_perc": 25,
    "scaling_delay": 5,
    "request_timeout": 60,
    "startup_timeout": 600,
    "setup_function": _setup,
    "regions": ["us-east", "eu-west"],
    "serve": True,
    "metadata": {"team": "ml", "nested": {"a": [1, 2]}},
    "local_python_modules": ["helpers", "models.common"],
    "python_version": "3.11",
}


# -- accepted options ---------------------------------------------------------


# fal's App attributes that tidal also accepts on functions.
FAL_APP_ATTRIBUTES = {"app_auth", "secrets"}
# tidal's own options for web servers behind the gateway (docs/web-servers.md).
WEB_SERVER_OPTIONS = {"long_lived", "max_long_lived", "affinity"}
SANDBOX_OPTIONS = {"egress"}  # tidal's own (docs/security.md)
# tidal's own options for cold starts (docs/architecture.md, runner templates).
COLD_START_OPTIONS = {"runner_templates"}


def test_fal_table_is_exactly_the_option_set() -> None:
    tidal_own = WEB_SERVER_OPTIONS | SANDBOX_OPTIONS | COLD_START_OPTIONS
    assert set(FAL_FUNCTION_TABLE) | FAL_APP_ATTRIBUTES | tidal_own == OPTION_NAMES


def test_egress_is_none_or_internet() -> None:
    assert build_options({}).egress == "none"
    assert build_options({"egress": "internet"}).egress == "internet"
    with pytest.raises(InvalidOptionError, match=r"egress='everywhere'.*'none'.*'internet'"):
        build_options({"egress": "everywhere"})


def test_long_lived_connections_default_by_kind_of_app() -> None:
    assert build_options({}).long_lived == "slot"
    assert build_options({"exposed_port": 8188}).long_lived == "separate"
    assert build_options({"exposed_port": 8188, "long_lived": "slot"}).long_lived == "slot"


@pytest.mark.parametrize("bad", ["", "cookies", "header:", "query:a b", "header:x;y"])
def test_affinity_must_name_a_source(bad: str) -> None:
    with pytest.raises(InvalidOptionError, match="affinity must be 'cookie'"):
        build_options({"affinity": bad})


def test_every_fal_option_is_accepted_and_stored() -> None:
    fn = tidal.function(**FAL_FUNCTION_TABLE)(_body)
    assert isinstance(fn, tidal.Function)
    opts = fn.options
    assert isinstance(opts, AppOptions)
    for name, value in FAL_FUNCTION_TABLE.items():
        if name == "setup_function":
            assert opts.setup_function == "_setup"
        else:
            assert getattr(opts, name) == value, name


def test_decorated_function_still_runs_locally_and_keeps_its_name() -> None:
    fn = tidal.function(keep_alive=1)(_body)
    assert fn.local(41) == 42  # calling it runs it on a runner (tests/e2e/test_fal_function.py)
    server = tidal.function(exposed_port=8000)(_body)
    assert server(41) == 42  # a server's body runs where it is called
    assert fn.__name__ == "_body"
    assert fn.func is _body


def test_machine_type_accepts_a_list() -> None:
    fn = tidal.function(machine_type=["GPU-A100", "GPU-H100"])(_body)
    assert fn.options.machine_type == ["GPU-A100", "GPU-H100"]


def test_setup_function_given_by_name_is_kept() -> None:
    fn = tidal.function(setup_function="load_model")(_body)
    assert fn.options.setup_function == "load_model"


def test_image_from_each_constructor_is_accepted() -> None:
    for image in (
        ContainerImage.from_dockerfile_str("FROM python:3.11\n"),
        ContainerImage.from_dockerfile("docker/Dockerfile"),
        ContainerImage.from_registry("ghcr.io/org/app:1.0"),
    ):
        assert tidal.function(image=image)(_body).options.image == image


def test_fal_function_defaults() -> None:
    opts = tidal.function()(_body).options
    assert opts.keep_alive == 10
    assert opts.machine_type == "XS"
    assert opts.max_multiplexing == 1
    assert opts.min_concurrency == 0
    assert opts.max_concurrency is None
    assert opts.concurrency_buffer == 0
    assert opts.concurrency_buffer_perc == 0
    assert opts.scaling_delay == 0
    assert opts.exposed_port is None
    assert opts.image is None
    assert opts.requirements == []
    assert opts.serve is False
    assert opts.setup_function is None


def test_defaults_are_not_shared_between_functions() -> None:
    a = tidal.function()(_body).options
    b = tidal.function()(_body).options
    a.requirements.append("x")
    a.metadata["k"] = 1
    assert b.requirements == []
    assert b.metadata == {}


def test_scaling_fields_are_a_subset_of_options() -> None:
    assert SCALING_FIELDS < OPTION_NAMES
    assert {"keep_alive", "min_concurrency", "max_concurrency", "scaling_delay"} <= SCALING_FIELDS
    assert "image" not in SCALING_FIELDS


def test_edge_values_are_accepted() -> None:
    opts = build_options(
        {
            "exposed_port": 65535,
            "keep_alive": 0,
            "concurrency_buffer_perc": 100,
            "min_concurrency": 3,
            "max_concurrency": 3,
        }
    )
    assert opts.exposed_port == 65535
    assert opts.keep_alive == 0
    assert opts.concurrency_buffer_perc == 100
    assert build_options({"exposed_port": 1}).exposed_port == 1


# -- rejected options -------------------------------------------------------------


def test_unknown_option_is_named_with_a_did_you_mean_hint() -> None:
    with pytest.raises(InvalidOptionError) as info:
        tidal.function(keepalive=30)
    msg = str(info.value)
    assert "'keepalive'" in msg
    assert "Did you mean 'keep_alive'?" in msg


def test_unknown_option_without_a_near_miss_has_no_hint() -> None:
    with pytest.raises(InvalidOptionError) as info:
        tidal.function(zzzzzz=1)
    assert "'zzzzzz'" in str(info.value)
    assert "Did you mean" not in str(info.value)


def test_invalid_option_error_is_a_value_error() -> None:
    assert issubclass(InvalidOptionError, ValueError)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"exposed_port": 0}, "exposed_port"),
        ({"exposed_port": 70000}, "exposed_port"),
        ({"keep_alive": -1}, "keep_alive"),
        ({"min_concurrency": 5, "max_concurrency": 2}, "min_concurrency"),
        ({"min_concurrency": 5, "max_concurrency": 2}, "max_concurrency"),
        ({"concurrency_buffer_perc": 101}, "concurrency_buffer_perc"),
        ({"concurrency_buffer_perc": -1}, "concurrency_buffer_perc"),
        ({"machine_type": []}, "machine_type"),
        ({"machine_type": ""}, "machine_type"),
        ({"machine_type": ["S", ""]}, "machine_type"),
        ({"max_multiplexing": 0}, "max_multiplexing"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"num_gpus": -1}, "num_gpus"),
        ({"scaling_delay": -1}, "scaling_delay"),
        ({"image": "python:3.11"}, "image"),
    ],
)
def test_invalid_option_raises_naming_it(options: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidOptionError) as info:
        tidal.function(**options)
    assert named in str(info.value)


def test_invalid_value_is_shown_in_the_message() -> None:
    with pytest.raises(InvalidOptionError) as info:
        tidal.function(exposed_port=70000)
    assert "exposed_port=70000" in str(info.value)


def test_error_is_raised_at_definition_time_not_at_decoration() -> None:
    # The options are checked when `tidal.function(...)` is called, before any body is given.
    with pytest.raises(InvalidOptionError):
        tidal.function(keep_alive=-5)


def test_decorating_a_non_callable_is_rejected() -> None:
    with pytest.raises(InvalidOptionError):
        tidal.function()(42)  # type: ignore[arg-type]


def test_scaling_options_check_min_over_max_on_assignment() -> None:
    opts = ScalingOptions(min_concurrency=2, max_concurrency=4)
    with pytest.raises(ValueError, match="min_concurrency"):
        opts.max_concurrency = 1


# -- ContainerImage -----------------------------------------------------------------


def test_from_dockerfile_str() -> None:
    image = ContainerImage.from_dockerfile_str("FROM python:3.11\n", build_args={"A": "1"})
    assert isinstance(image, ImageSpec)
    assert image.kind == "dockerfile_str"
    assert image.dockerfile == "FROM python:3.11\n"
    assert image.build_args == {"A": "1"}


@pytest.mark.parametrize("text", ["", "   ", "\n\t\n"])
def test_from_dockerfile_str_rejects_empty_text(text: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        ContainerImage.from_dockerfile_str(text)


def test_from_dockerfile_accepts_str_and_path() -> None:
    a = ContainerImage.from_dockerfile("docker/Dockerfile")
    b = ContainerImage.from_dockerfile(Path("docker") / "Dockerfile", build_args={"X": "y"})
    assert isinstance(a, ImageSpec)
    assert a.kind == b.kind == "dockerfile"
    assert a.path == "docker/Dockerfile"
    assert b.path == str(Path("docker") / "Dockerfile")
    assert a.build_args == {}
    assert b.build_args == {"X": "y"}


def test_from_registry() -> None:
    image = ContainerImage.from_registry("ghcr.io/org/app:1.0", auth="ghcr-token")
    assert isinstance(image, ImageSpec)
    assert image.kind == "registry"
    assert image.ref == "ghcr.io/org/app:1.0"
    assert image.auth_secret == "ghcr-token"
    assert ContainerImage.from_registry("ubuntu").auth_secret is None


@pytest.mark.parametrize("ref", ["", "python 3.11", " python:3.11"])
def test_from_registry_rejects_bad_refs(ref: str) -> None:
    with pytest.raises(ValueError, match="not an image reference"):
        ContainerImage.from_registry(ref)


@pytest.mark.parametrize("ref", ["python:3.11\n", "python\t3.11"])
def test_from_registry_rejects_other_whitespace(ref: str) -> None:
    with pytest.raises(ValueError, match="not an image reference"):
        ContainerImage.from_registry(ref)


def test_image_spec_is_frozen_and_strict() -> None:
    image = ContainerImage.from_registry("ubuntu")
    with pytest.raises(ValueError):
        image.ref = "debian"  # type: ignore[misc]
    with pytest.raises(ValueError):
        ImageSpec(kind="registry", ref="x", unknown="y")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        ImageSpec(kind="tarball")  # type: ignore[arg-type]


# -- AppSpec ------------------------------------------------------------------------


def test_app_spec_round_trips_through_json_with_an_image() -> None:
    options = tidal.function(**FAL_FUNCTION_TABLE)(_body).options
    options = options.model_copy(
        update={
            "image": ContainerImage.from_dockerfile_str(
                'FROM python:3.11\nRUN echo "hi"\n', build_args={"V": "1"}
            ),
            "machine_type": ["S", "M"],
        }
    )
    spec = AppSpec(
        name="demo",
        entry="app.py::handler",
        kind="app",
        options=options,
        openapi={"openapi": "3.1.0", "paths": {}},
        bundle_digest="sha256:abc",
    )
    again = AppSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert isinstance(again.options.image, ImageSpec)
    assert again.options.image.kind == "dockerfile_str"
    assert again.options.image.build_args == {"V": "1"}
    assert again.options.machine_type == ["S", "M"]
    assert again.options.setup_function == "_setup"


@pytest.mark.parametrize(
    "image",
    [
        ContainerImage.from_registry("ghcr.io/org/app:1.0", auth="creds"),
        ContainerImage.from_dockerfile("Dockerfile"),
        None,
    ],
)
def test_app_spec_round_trip_each_image_kind(image: ImageSpec | None) -> None:
    spec = AppSpec(name="a", entry="main.py::app", options=AppOptions(image=image))
    assert AppSpec.model_validate_json(spec.model_dump_json()) == spec


def test_app_spec_defaults_and_entry_parts() -> None:
    spec = AppSpec(name="a", entry="pkg/main.py::my_app")
    assert spec.kind == "function"
    assert spec.options == AppOptions()
    assert spec.entry_file == "pkg/main.py"
    assert spec.entry_name == "my_app"


def test_app_spec_rejects_unknown_fields_and_options() -> None:
    with pytest.raises(ValueError):
        AppSpec.model_validate({"name": "a", "entry": "m.py::f", "extra": 1})
    with pytest.raises(ValueError):
        AppSpec.model_validate({"name": "a", "entry": "m.py::f", "options": {"keepalive": 1}})


def test_booleans_are_not_taken_for_numbers() -> None:
    with pytest.raises(InvalidOptionError, match="keep_alive=True"):
        tidal.function(keep_alive=True)


def test_from_dockerfile_needs_a_path() -> None:
    with pytest.raises(ValueError, match="Dockerfile's path"):
        ContainerImage.from_dockerfile("")
