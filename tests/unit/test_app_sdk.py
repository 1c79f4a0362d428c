"""tidal.App and tidal.endpoint as fal defines them: options, defaults, refusals."""

from __future__ import annotations

import pytest

import tidal
from tidal.sdk.app import EndpointSpec, endpoints


def test_class_keywords_and_attributes_become_options_with_app_defaults() -> None:
    class Model(tidal.App, keep_alive=300, max_concurrency=1, name="my-model"):
        machine_type = "M"
        requirements = ["numpy"]
        min_concurrency = 1

    options = Model.options()
    assert (options.keep_alive, options.max_concurrency, options.min_concurrency) == (300, 1, 1)
    assert options.machine_type == "M" and options.requirements == ["numpy"]
    assert Model.app_name == "my-model"

    class Defaults(tidal.App):
        pass

    assert Defaults.options().keep_alive == 60  # fal's App default (function: 10)
    assert Defaults.options().machine_type == "S"  # fal's App default (function: XS)


def test_subclasses_inherit_and_override_options() -> None:
    class Base(tidal.App, keep_alive=100):
        machine_type = "M"

    class Child(Base, max_concurrency=3):
        machine_type = "L"

    assert Child.options().keep_alive == 100
    assert Child.options().machine_type == "L"
    assert Child.options().max_concurrency == 3
    assert Base.options().max_concurrency is None


def test_unknown_and_invalid_options_name_themselves() -> None:
    with pytest.raises(tidal.InvalidOptionError, match="Did you mean 'keep_alive'"):

        class Typo(tidal.App, keepalive=3):  # type: ignore[call-arg]
            pass

    with pytest.raises(tidal.InvalidOptionError, match="max_concurrency=0"):

        class Zero(tidal.App, max_concurrency=0):
            pass


def test_overriding_init_is_refused() -> None:
    with pytest.raises(tidal.InvalidOptionError, match="overrides __init__"):

        class WithInit(tidal.App):
            def __init__(self) -> None:
                pass


def test_endpoints_are_collected_with_their_specs() -> None:
    check = tidal.HealthCheck(start_period_seconds=1)

    class Api(tidal.App):
        @tidal.endpoint("/generate")
        def generate(self) -> None: ...

        @tidal.endpoint("/health", method="GET", health_check=check)
        def health(self) -> None: ...

        @tidal.endpoint("/ws", is_websocket=True)
        async def ws(self) -> None: ...

    found = dict(endpoints(Api))
    assert found["generate"] == EndpointSpec("/generate", "POST")
    assert found["health"] == EndpointSpec("/health", "GET", health_check=check)
    assert found["ws"].is_websocket


def test_at_most_one_health_check() -> None:
    check = tidal.HealthCheck()
    with pytest.raises(tidal.InvalidOptionError, match="2 health checks"):

        class TwoChecks(tidal.App):
            @tidal.endpoint("/a", health_check=check)
            def a(self) -> None: ...

            @tidal.endpoint("/b", health_check=check)
            def b(self) -> None: ...


def test_endpoint_paths_and_methods_are_checked() -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        tidal.endpoint("generate")
    with pytest.raises(ValueError, match="use one of"):
        tidal.endpoint("/x", method="FETCH")


def test_the_public_surface() -> None:
    assert sorted(tidal.__all__) == sorted([
        "App", "AppException", "AppOptions", "AppSpec", "ContainerImage", "FieldException",
        "Function", "HealthCheck", "ImageApp", "ImageSpec", "InvalidOptionError", "__version__",
        "cached", "endpoint", "function", "realtime", "wrap_app",
    ])  # fmt: skip
    for name in tidal.__all__:
        assert getattr(tidal, name) is not None
