"""Deploying: code bundles, environments, images, and POST /api/v1/apps."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from tidal.backends.choice import DOCKER, choose_backend
from tidal.backends.registry import Backends
from tidal.config import PlatformConfig
from tidal.control.image_step import ImageStep
from tidal.control.names import app_name_problem
from tidal.control.openapi import openapi_problem
from tidal.control.registry import Registry
from tidal.control.views import AppViews
from tidal.environments import Environment, EnvironmentBuildError, Environments
from tidal.images.builder import BuiltImage, ImageBuildError
from tidal.scaling.controller import Controller
from tidal.scaling.placement import Inventory
from tidal.spec import AppSpec, ImageSpec, InvalidOptionError
from tidal.storage.bundles import BundleError, store_bundle

T = TypeVar("T")


class DeployRequest(BaseModel):
    spec: AppSpec
    # Callable without an API key; private (the default) unless each deploy says so.
    public: bool = False
    # A backend the deployer insists on (`tidal deploy --local`); else the platform picks.
    backend: str | None = None
    # Drop live scaling changes (`tidal apps scale`): the code's options apply again.
    reset_scale: bool = False


class ImageRequest(BaseModel):
    image: ImageSpec
    # The app's `requirements`: installed into the image, on top of what it has.
    requirements: list[str] = []
    # False for an image-only app: its image as it is, without tidal's runtime.
    runtime_layer: bool = True


class EnvironmentRequest(BaseModel):
    requirements: list[str] = []
    python_version: str | None = None


async def with_environment(environments: Environments, spec: AppSpec) -> AppSpec:
    """The spec with the environment its requirements need, built or found."""
    options = spec.options
    if not (options.requirements or options.python_version):
        return spec
    try:
        async for item in environments.ensure(options.requirements, options.python_version):
            if isinstance(item, Environment):
                spec = spec.model_copy(update={"environment": item.digest})
    except EnvironmentBuildError as exc:
        raise InvalidOptionError(str(exc)) from None
    return spec


def deploy_router(
    owner: str,
    config: PlatformConfig,
    registry: Registry,
    controller: Controller,
    backends: Backends,
    inventory: Inventory,
    environments: Environments,
    images: ImageStep,
    views: AppViews,
) -> APIRouter:
    api = APIRouter()
    bundles = config.data_dir / "bundles"

    @api.head("/api/v1/bundles/{digest}")
    async def has_bundle(digest: str) -> Response:
        found = (bundles / digest).is_dir()
        return Response(status_code=200 if found else 404)

    @api.put("/api/v1/bundles/{digest}")
    async def put_bundle(digest: str, request: Request) -> dict[str, str]:
        limit = config.bundle_limit_bytes
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit:
            raise BundleError(
                f"the code bundle is {declared // 2**20} MB, above the {limit // 2**20} MB limit"
            )
        data = await request.body()
        store_bundle(bundles, digest, data, limit, config.bundle_unpacked_limit_bytes)
        return {"digest": digest}

    @api.post("/api/v1/apps", status_code=201)
    async def deploy(body: DeployRequest, request: Request) -> dict[str, Any]:
        spec = body.spec
        if problem := app_name_problem(spec.name):
            raise InvalidOptionError(problem)
        if not spec.bundle_digest or not (bundles / spec.bundle_digest).is_dir():
            raise HTTPException(400, "upload the code bundle (PUT /api/v1/bundles/{digest}) first")
        if spec.openapi is not None and (problem := openapi_problem(spec.openapi)):
            raise InvalidOptionError(f"the app's OpenAPI document is not valid: {problem}")
        options = spec.options
        types = (
            [options.machine_type]
            if isinstance(options.machine_type, str)
            else options.machine_type
        )
        choice = choose_backend(
            options, backends.usable, backends.unusable, config.machine_backends, body.backend
        )
        # A cluster backend (ray) places runners itself, by node resources and labels:
        # this host's capacity and region say nothing about where they can run.
        clustered = backends.usable[choice.backend].own_placement
        unknown = [t for t in types if t not in inventory.catalog]
        checked = (unknown or None) if clustered else types  # clustered: names only
        problem = inventory.check(checked, options.num_gpus) if checked else None
        if problem:
            raise InvalidOptionError(f"machine_type {options.machine_type!r}: {problem}")
        region = config.region
        if options.regions is not None and region not in options.regions and not clustered:
            raise InvalidOptionError(
                f"regions {options.regions!r}: this platform's runners are in region "
                f"{region!r}; include it, or leave regions unset"
            )
        if spec.kind == "image" and choice.backend != DOCKER:
            raise InvalidOptionError(
                f"an image-only app runs its image on the docker backend, not {choice.backend!r}"
            )
        in_image = choice.backend == DOCKER and spec.options.image is not None
        if not in_image:
            # Built now, not at the first request (usually already built by the CLI's
            # POST /api/v1/environments, which shows progress).
            spec = await with_environment(environments, spec)
        spec = spec.model_copy(update={"backend": choice.backend})
        if in_image:
            assert spec.options.image is not None
            # Built now (a cache hit when the CLI's POST /api/v1/images built it first);
            # the requirements go into the image.
            try:
                async for built in images.build(
                    owner,
                    spec.options.image,
                    spec.options.requirements,
                    runtime_layer=spec.kind != "image",
                ):
                    if isinstance(built, BuiltImage):
                        spec = spec.model_copy(update={"image_ref": built.ref})
            except ImageBuildError as exc:
                raise InvalidOptionError(str(exc)) from None
        record = await asyncio.to_thread(
            registry.deploy, owner, spec, body.public, body.reset_scale
        )
        controller.apply(record)
        return {**views.app(record, str(request.base_url)), "warnings": choice.warnings}

    @api.post("/api/v1/environments")
    async def build_environment(body: EnvironmentRequest) -> StreamingResponse:
        """Build (or find) an environment, streaming progress as JSON lines."""
        started = time.monotonic()

        def ready(item: Environment) -> dict[str, Any]:
            return {"ready": item.digest, "python": item.python_version,
                    "seconds": round(time.monotonic() - started, 2)}  # fmt: skip

        build = environments.ensure(body.requirements, body.python_version)
        return _progress(build, Environment, ready, EnvironmentBuildError)

    @api.post("/api/v1/images")
    async def build_image_stream(body: ImageRequest) -> StreamingResponse:
        """Build (or find) an app's container image, streaming its log as JSON lines."""

        def ready(item: BuiltImage) -> dict[str, Any]:
            return {"ready": item.ref, "cached": item.cached, "seconds": round(item.seconds, 2)}

        build = images.build(owner, body.image, body.requirements, body.runtime_layer)
        return _progress(build, BuiltImage, ready, ImageBuildError)

    return api


def _progress(
    build: AsyncIterator[Any],
    result: type[T],
    ready: Callable[[T], dict[str, Any]],
    failure: type[Exception],
) -> StreamingResponse:
    """A build as JSON lines: `{"log": line}` while it runs, then `ready(result)`, or
    `{"error": message}` where it fails with `failure`."""

    async def lines() -> AsyncIterator[str]:
        try:
            async for item in build:
                view = ready(item) if isinstance(item, result) else {"log": item}
                yield json.dumps(view) + "\n"
        except failure as exc:
            yield json.dumps({"error": str(exc)}) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
