"""AppSpec: the one contract between the SDK, the control plane and runners.

It imports nothing of the platform. Every option of fal's parameter table is a
field here with fal's default; an unknown or invalid option fails when the
user's code is defined, with a message naming the option.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

AFFINITY = re.compile(r"cookie|(header|query):[A-Za-z0-9_-]{1,64}")
# The most runner templates one revision keeps waiting (`runner_templates=N`).
MAX_TEMPLATES = 8


class InvalidOptionError(ValueError):
    """An app option that tidal cannot accept; the message names it and the fix."""


class ImageSpec(BaseModel):
    """A container image: Dockerfile text, a Dockerfile path, or a registry reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["dockerfile_str", "dockerfile", "registry"]
    dockerfile: str | None = None
    path: str | None = None
    ref: str | None = None
    build_args: dict[str, str] = Field(default_factory=dict)
    # Registry credentials are never inlined: this names a platform secret.
    auth_secret: str | None = None
    # from_dockerfile: the digest of its folder (the build context), uploaded by the CLI
    # through the bundle store; `path` is then the Dockerfile's name inside it.
    context: str | None = None
    # from_dockerfile_str(context_dir=, dockerignore=): the folder on the deploying
    # machine that the CLI uploads as the build context (then `context`), and the
    # .dockerignore patterns it leaves out (None: the folder's own .dockerignore).
    context_dir: str | None = None
    dockerignore: list[str] | None = None


class ScalingOptions(BaseModel):
    """Options that can change on a live app without a redeploy (`tidal apps scale`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    keep_alive: StrictInt = Field(default=10, ge=0)
    min_concurrency: StrictInt = Field(default=0, ge=0)
    # None: the platform's default ceiling (config `default_max_concurrency`).
    max_concurrency: StrictInt | None = Field(default=None, ge=1)
    concurrency_buffer: StrictInt = Field(default=0, ge=0)
    concurrency_buffer_perc: StrictInt = Field(default=0, ge=0, le=100)
    scaling_delay: StrictInt = Field(default=0, ge=0)
    request_timeout: StrictInt | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> ScalingOptions:
        if self.max_concurrency is not None and self.min_concurrency > self.max_concurrency:
            raise ValueError(
                f"min_concurrency ({self.min_concurrency}) is greater than "
                f"max_concurrency ({self.max_concurrency}); lower min_concurrency "
                "or raise max_concurrency"
            )
        return self


SCALING_FIELDS = frozenset(ScalingOptions.model_fields)


class AppOptions(ScalingOptions):
    """Every option of fal's `function` parameter table, with fal's defaults."""

    image: ImageSpec | None = None
    machine_type: str | list[str] = "XS"
    num_gpus: StrictInt | None = Field(default=None, ge=0)
    exposed_port: StrictInt | None = Field(default=None, ge=1, le=65535)
    requirements: list[str] = Field(default_factory=list)
    max_multiplexing: StrictInt = Field(default=1, ge=1)
    startup_timeout: StrictInt | None = Field(default=None, ge=1)
    # The name of the function to run before serving; stored by name, resolved in the runner.
    setup_function: str | None = None
    regions: list[str] | None = None
    serve: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    local_python_modules: list[str] = Field(default_factory=list)
    python_version: str | None = None
    # fal App attributes: who may call the app, and the secrets its runners get.
    app_auth: Literal["public", "private", "shared"] | None = None
    secrets: list[str] = Field(default_factory=list)
    # Long-lived connections (WebSockets, text/event-stream answers): "slot" holds one of
    # max_multiplexing's request slots while open (as fal, Modal and Knative count them);
    # "separate" counts them apart, up to max_long_lived per runner, so a client's progress
    # channel never starves its own requests. Unset: "separate" for direct servers
    # (exposed_port), "slot" otherwise. See docs/web-servers.md.
    long_lived: Literal["slot", "separate"] | None = None
    max_long_lived: StrictInt = Field(default=100, ge=1, le=10_000)
    # Session affinity: "cookie", "header:<name>" or "query:<name>"; a client's requests
    # and WebSockets with the same value go to the same runner while it lives.
    affinity: str | None = None
    # tidal's own: False starts every runner as a fresh process, never from a runner
    # template (a module that must run per process at import, for instance); a count
    # keeps that many templates waiting per revision, so a burst of cold requests
    # finds one each (True: one).
    runner_templates: bool | StrictInt = True

    @field_validator("runner_templates")
    @classmethod
    def _templates_counted(cls, value: bool | int) -> bool | int:
        if not isinstance(value, bool) and not 0 <= value <= MAX_TEMPLATES:
            raise ValueError(
                "runner_templates is True, False or how many runner templates to keep "
                f"waiting per revision, 0 to {MAX_TEMPLATES}; got {value}"
            )
        return value

    @model_validator(mode="after")
    def _long_lived_resolved(self) -> AppOptions:
        if self.long_lived is None:
            # Stored resolved, so `tidal apps show` says what applies.
            object.__setattr__(
                self, "long_lived", "separate" if self.exposed_port is not None else "slot"
            )
        return self

    @model_validator(mode="after")
    def _affinity_named(self) -> AppOptions:
        if self.affinity is not None and not AFFINITY.fullmatch(self.affinity):
            raise ValueError(
                "affinity must be 'cookie', 'header:<name>' or 'query:<name>' (a name of "
                "letters, digits, '-' and '_', e.g. 'query:clientId'); got "
                f"{self.affinity!r}"
            )
        return self

    # tidal's own: where a runner's network reaches. "none": nowhere (loopback only);
    # "internet": outside through NAT, never the host's own addresses or other runners.
    egress: str = "none"

    @field_validator("egress")
    @classmethod
    def _egress_known(cls, value: str) -> str:
        if value not in ("none", "internet"):
            raise ValueError(
                "choose 'none' (the runner reaches no network) or 'internet' (it reaches "
                "outside through NAT, never the platform's host or other runners)"
            )
        return value

    @model_validator(mode="after")
    def _machine_type_named(self) -> AppOptions:
        types = [self.machine_type] if isinstance(self.machine_type, str) else self.machine_type
        if not types or any(not t for t in types):
            raise ValueError("machine_type must be a name such as 'S' or a non-empty list of names")
        return self


OPTION_NAMES = frozenset(AppOptions.model_fields)


def connections_note(options: AppOptions) -> str:
    """How the app's WebSockets and event streams count, for `tidal apps show`."""
    if options.long_lived == "separate":
        note = (
            "WebSockets and event streams do not take request slots (long_lived='separate'): "
            f"up to {options.max_long_lived} per runner besides its "
            f"{options.max_multiplexing} request slot(s)"
        )
    else:
        note = (
            "each open WebSocket or event stream holds one of a runner's "
            f"{options.max_multiplexing} request slot(s) (long_lived='slot')"
        )
    if options.affinity:
        note += f"; a client's requests stay on one runner (affinity={options.affinity!r})"
    return note + "; see docs/web-servers.md"


# Options that mean a Python entry, so an image-only app cannot take them.
IMAGE_ONLY_UNUSED = frozenset(
    {"requirements", "python_version", "setup_function", "local_python_modules", "serve"}
)


class HealthCheckSpec(BaseModel):
    """An App's `@endpoint(path, health_check=HealthCheck(...))`, which the platform calls."""

    model_config = ConfigDict(extra="forbid")

    path: str
    method: str = "POST"
    start_period_seconds: StrictInt = Field(default=30, ge=0)
    timeout_seconds: StrictInt = Field(default=5, ge=1)
    failure_threshold: StrictInt = Field(default=3, ge=1)
    call_regularly: bool = True


class AppSpec(BaseModel):
    """What the control plane stores per revision and hands to the runner."""

    model_config = ConfigDict(extra="forbid")

    name: str
    entry: str  # "file.py::object_name", relative to the code bundle's root
    # "image": no Python entry; the image's own ENTRYPOINT/CMD serves on exposed_port.
    kind: Literal["function", "app", "image"] = "function"
    options: AppOptions = Field(default_factory=AppOptions)
    openapi: dict[str, Any] | None = None
    health_check: HealthCheckSpec | None = None
    bundle_digest: str | None = None
    # Set by the platform at deploy: the environment built for the requirements.
    environment: str | None = None
    # Set by the platform at deploy: the backend that runs this revision's runners
    # (tidal.backends.choice), and the container image built or pulled for it.
    backend: str | None = None
    image_ref: str | None = None

    @model_validator(mode="after")
    def _image_only_has_what_it_needs(self) -> AppSpec:
        if self.kind == "image":
            if self.options.image is None or self.options.exposed_port is None:
                raise ValueError(
                    "an image-only app needs image= (a ContainerImage) and exposed_port= "
                    "(the port its own command serves on)"
                )
            given = {
                n for n in IMAGE_ONLY_UNUSED if getattr(self.options, n) not in (None, [], False)
            }
            if unused := given:
                raise ValueError(
                    f"{', '.join(sorted(unused))}: an image-only app runs its image as it "
                    "is, with no Python entry; put what it needs into the image"
                )
        return self

    @property
    def entry_file(self) -> str:
        return self.entry.split("::", 1)[0]

    @property
    def entry_name(self) -> str:
        return self.entry.split("::", 1)[1]


def build_options(options: dict[str, Any], *, defaults: dict[str, Any] | None = None) -> AppOptions:
    """Validate user-given options into AppOptions, or raise InvalidOptionError naming one."""
    unknown = sorted(set(options) - OPTION_NAMES)
    if unknown:
        raise InvalidOptionError(_unknown_option_message(unknown[0]))
    try:
        return AppOptions.model_validate({**(defaults or {}), **options})
    except ValidationError as exc:
        raise InvalidOptionError(describe_validation_error(exc, options)) from None


def describe_validation_error(exc: ValidationError, given: dict[str, Any]) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        msg = err["msg"].removeprefix("Value error, ")
        if loc:
            name = loc[0]
            value = given.get(name, err.get("input"))
            parts.append(f"invalid option {name}={value!r}: {msg}")
        else:
            parts.append(f"invalid options: {msg}")
    return "; ".join(parts)


def _unknown_option_message(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(OPTION_NAMES), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown option {name!r}.{hint} Valid options: {', '.join(sorted(OPTION_NAMES))}."
