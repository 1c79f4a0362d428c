"""The control-plane HTTP API under /api/v1. The CLI is only a client of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from tidal import __version__
from tidal.backends.choice import DOCKER, choose_backend
from tidal.control.api_errors import document_errors
from tidal.control.image_step import build_image
from tidal.control.names import app_name_problem
from tidal.control.openapi import openapi_problem
from tidal.control.registry import LIST_PAGE_MAX, NotFound
from tidal.domain.app import AppRecord
from tidal.domain.runner import RUNNER_PHASE_NAMES, RUNNER_PHASES, Runner
from tidal.environments import Environment, EnvironmentBuildError
from tidal.images.builder import BuiltImage, ImageBuildError
from tidal.observe.logs import app_log_files, follow, tail
from tidal.sandbox.status import app_sandbox, platform_sandbox
from tidal.spec import AppSpec, ImageSpec, InvalidOptionError, connections_note
from tidal.storage.bundles import BundleError, store_bundle

if TYPE_CHECKING:
    from tidal.server import Platform


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


class RollbackRequest(BaseModel):
    revision: int


class EnvironmentRequest(BaseModel):
    requirements: list[str] = []
    python_version: str | None = None


# Apps per page of `GET /api/v1/apps` unless `?limit=` says otherwise.
LIST_PAGE_DEFAULT = 100


def runner_view(r: Runner) -> dict[str, Any]:
    return {
        "id": r.id,
        "app": r.app,
        "revision": r.revision,
        "state": r.state.value,
        "reason": r.reason,
        "backend": r.backend,
        "pid": r.pid,
        "machine_type": r.machine_type,
        "gpus": list(r.gpu_ids),
        "address": f"{r.address.host}:{r.address.port}" if r.address else None,
        "isolated_network": bool(r.address and r.address.netns_pid),
        "in_flight": r.in_flight,
        "served": r.served,
        "created_at": r.created_at,
        "ready_at": r.ready_at,
        "ended_at": r.ended_at,
        "idle_seconds": round(time.monotonic() - r.idle_since, 1) if r.in_flight == 0 else 0.0,
    }


def _endpoints(openapi: dict[str, Any] | None) -> list[str]:
    if not openapi:
        return []
    return [
        f"{method.upper()} {path}"
        for path, ops in openapi.get("paths", {}).items()
        for method in ops
    ]


def stored_view(record: AppRecord, base_url: str) -> dict[str, Any]:
    """The app as stored (pure; run off the event loop for a page of apps)."""
    base = base_url.rstrip("/")
    return {
        "owner": record.owner,
        "name": record.name,
        "url": f"{base}/{record.owner}/{record.name}",
        "revision": record.revision,
        "public": record.public,
        "kind": record.spec.kind,
        "entry": record.spec.entry,
        "bundle_digest": record.spec.bundle_digest,
        "options": record.options.model_dump(mode="json"),
        "scaling_overrides": record.scaling_overrides,
        "endpoints": _endpoints(record.spec.openapi),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _after(cursor: str | None) -> tuple[str, str] | None:
    if cursor is None:
        return None
    owner, sep, name = cursor.partition("/")
    if not sep or not owner or not name:
        raise HTTPException(
            422,
            f"cursor {cursor[:200]!r} is not one this API gave: pass the X-Next-Cursor "
            "header of the previous page (OWNER/NAME of its last app), or no cursor for "
            "the first page",
        )
    return owner, name


def build_api(platform: Platform) -> FastAPI:
    api = FastAPI(
        title="tidal control plane",
        version=__version__,
        docs_url="/api/v1/docs",
        openapi_url="/api/v1/openapi.json",
        redoc_url=None,
    )
    document_errors(api)
    owner = platform.owner
    data_dir = platform.config.data_dir

    @api.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @api.exception_handler(InvalidOptionError)
    async def _invalid(request: Request, exc: InvalidOptionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @api.exception_handler(BundleError)
    async def _bundle(request: Request, exc: BundleError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413 if "limit" in str(exc) else 400)

    def app_view(record: AppRecord, request: Request) -> dict[str, Any]:
        return {**stored_view(record, str(request.base_url)), **live_view(record)}

    def live_view(record: AppRecord) -> dict[str, Any]:
        """What this platform's runners and routers say of the app now (memory only)."""
        dep = platform.controller.deployments.get((record.owner, record.name))
        live = list(dep.runners.values()) if dep else []
        notes = []
        if dep and (note := platform.controller.port_note(dep)):
            notes.append(note)
        if record.options.exposed_port is not None or record.options.affinity:
            notes.append(connections_note(record.options))
        if record.scaling_overrides:
            changed = ", ".join(f"{k}={v}" for k, v in sorted(record.scaling_overrides.items()))
            notes.append(f"live scaling changes override the code's options: {changed}")
        return {
            "max_runners": platform.controller.ceiling(dep) if dep else None,
            "runners": {
                phase: sum(RUNNER_PHASES.get(r.state) == phase for r in live)
                for phase in RUNNER_PHASE_NAMES
            },
            "waiting": len(dep.router.waits(time.monotonic())) if dep else 0,
            "limits": limits_of(record),
            "notes": notes,
            "sandbox": app_sandbox(
                platform_sandbox(platform.backends.usable, platform.backends.unusable),
                record.spec.backend,
                record.options.egress,
            ),
        }

    def limits_of(record: AppRecord) -> dict[str, Any]:
        """What bounds the app's callers: sync waiters (settable per app with `tidal
        apps scale NAME max_waiting=N`), and how long and how many queue results stay."""
        config = platform.config
        return {
            "max_waiting": platform.controller.max_waiting(record),
            "request_timeout": record.options.request_timeout or config.default_request_timeout,
            "queue_result_ttl_seconds": config.queue_result_ttl_seconds,
            "queue_results_per_app": config.queue_results_per_app,
        }

    @api.get("/api/v1/health")
    async def health(request: Request) -> dict[str, Any]:
        """Open to anyone (load balancers); the data directory and its disk only for
        an admin key (or with auth off)."""
        private: dict[str, Any] = {}
        if platform.auth.is_admin(dict(request.scope)):
            private = {"data_dir": str(data_dir), "disk_free_bytes": None,
                       "disk_total_bytes": None,
                       "sandbox": platform_sandbox(platform.backends.usable,
                                                   platform.backends.unusable)}  # fmt: skip
            with contextlib.suppress(OSError):
                disk = shutil.disk_usage(data_dir)
                private["disk_free_bytes"], private["disk_total_bytes"] = disk.free, disk.total
        return {
            "status": "ok",
            "version": __version__,
            "backend": next(iter(platform.backends.usable)),
            "backends": {
                "usable": list(platform.backends.usable),
                "unusable": platform.backends.unusable,
                # Which engine a backend drives (Docker's or Podman's), where it says.
                "engines": {
                    name: engine
                    for name, backend in platform.backends.usable.items()
                    if (engine := getattr(backend, "engine", None))
                },
            },
            # Cluster backends (ray): their nodes and resources, for `tidal doctor`.
            "clusters": {
                name: await asyncio.to_thread(backend.describe)
                for name, backend in platform.backends.usable.items()
                if hasattr(backend, "describe")
            },
            **private,
        }

    @api.get("/api/v1/machines")
    async def machines() -> dict[str, Any]:
        inventory = platform.inventory
        cpus, memory, gpus = inventory.free()
        return {
            "region": platform.config.region,
            "host": {"cpus": inventory.host.cpus, "memory_mb": inventory.host.memory_mb,
                     "gpus": [{"id": g.id, "model": g.model} for g in inventory.host.gpus]},
            "free": {"cpus": cpus, "memory_mb": memory, "gpus": gpus},
            "machine_types": [
                {"name": t.name, "cpus": t.cpus, "memory_mb": t.memory_mb, "gpus": t.gpus,
                 "gpu_model": t.gpu_model}
                for t in inventory.catalog.values()
            ],
        }  # fmt: skip

    @api.head("/api/v1/bundles/{digest}")
    async def has_bundle(digest: str) -> Response:
        found = (data_dir / "bundles" / digest).is_dir()
        return Response(status_code=200 if found else 404)

    @api.put("/api/v1/bundles/{digest}")
    async def put_bundle(digest: str, request: Request) -> dict[str, str]:
        limit = platform.config.bundle_limit_bytes
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit:
            raise BundleError(
                f"the code bundle is {declared // 2**20} MB, above the {limit // 2**20} MB limit"
            )
        data = await request.body()
        store_bundle(
            data_dir / "bundles", digest, data, limit, platform.config.bundle_unpacked_limit_bytes
        )
        return {"digest": digest}

    async def with_environment(spec: AppSpec) -> AppSpec:
        """The spec with the environment its requirements need, built or found."""
        options = spec.options
        if not (options.requirements or options.python_version):
            return spec
        try:
            async for item in platform.environments.ensure(
                options.requirements, options.python_version
            ):
                if isinstance(item, Environment):
                    spec = spec.model_copy(update={"environment": item.digest})
        except EnvironmentBuildError as exc:
            raise InvalidOptionError(str(exc)) from None
        return spec

    @api.post("/api/v1/apps", status_code=201)
    async def deploy(body: DeployRequest, request: Request) -> dict[str, Any]:
        spec = body.spec
        if problem := app_name_problem(spec.name):
            raise InvalidOptionError(problem)
        if not spec.bundle_digest or not (data_dir / "bundles" / spec.bundle_digest).is_dir():
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
            options,
            platform.backends.usable,
            platform.backends.unusable,
            platform.config.machine_backends,
            body.backend,
        )
        # A cluster backend (ray) places runners itself, by node resources and labels:
        # this host's capacity and region say nothing about where they can run.
        clustered = platform.backends.usable[choice.backend].own_placement
        unknown = [t for t in types if t not in platform.inventory.catalog]
        checked = (unknown or None) if clustered else types  # clustered: names only
        problem = platform.inventory.check(checked, options.num_gpus) if checked else None
        if problem:
            raise InvalidOptionError(f"machine_type {options.machine_type!r}: {problem}")
        region = platform.config.region
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
            spec = await with_environment(spec)
        spec = spec.model_copy(update={"backend": choice.backend})
        if in_image:
            assert spec.options.image is not None
            # Built now (a cache hit when the CLI's POST /api/v1/images built it first);
            # the requirements go into the image.
            try:
                async for built in build_image(
                    platform,
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
            platform.registry.deploy, owner, spec, body.public, body.reset_scale
        )
        platform.controller.apply(record)
        return {**app_view(record, request), "warnings": choice.warnings}

    @api.post("/api/v1/environments")
    async def build_environment(body: EnvironmentRequest) -> StreamingResponse:
        """Build (or find) an environment, streaming progress as JSON lines."""

        async def progress() -> AsyncIterator[str]:
            started = time.monotonic()
            try:
                async for item in platform.environments.ensure(
                    body.requirements, body.python_version
                ):
                    if isinstance(item, Environment):
                        yield (
                            json.dumps(
                                {
                                    "ready": item.digest,
                                    "python": item.python_version,
                                    "seconds": round(time.monotonic() - started, 2),
                                }
                            )
                            + "\n"
                        )
                    else:
                        yield json.dumps({"log": item}) + "\n"
            except EnvironmentBuildError as exc:
                yield json.dumps({"error": str(exc)}) + "\n"

        return StreamingResponse(progress(), media_type="application/x-ndjson")

    @api.post("/api/v1/images")
    async def build_image_stream(body: ImageRequest) -> StreamingResponse:
        """Build (or find) an app's container image, streaming its log as JSON lines."""

        async def progress() -> AsyncIterator[str]:
            try:
                async for item in build_image(
                    platform, owner, body.image, body.requirements, body.runtime_layer
                ):
                    if isinstance(item, BuiltImage):
                        done = {"ready": item.ref, "cached": item.cached,
                                "seconds": round(item.seconds, 2)}  # fmt: skip
                        yield json.dumps(done) + "\n"
                    else:
                        yield json.dumps({"log": item}) + "\n"
            except ImageBuildError as exc:
                yield json.dumps({"error": str(exc)}) + "\n"

        return StreamingResponse(progress(), media_type="application/x-ndjson")

    @api.get("/api/v1/apps")
    async def list_apps(
        request: Request,
        response: Response,
        limit: int = Query(LIST_PAGE_DEFAULT, ge=1, le=LIST_PAGE_MAX),
        cursor: str | None = None,
    ) -> list[dict[str, Any]]:
        """A page of apps in (owner, name) order. When more may follow, the
        `X-Next-Cursor` header (and a `Link: rel="next"`) gives the next page's
        `cursor`: the last app's `owner/name`."""
        after = _after(cursor)
        base = str(request.base_url)

        def page() -> list[tuple[AppRecord, dict[str, Any]]]:
            return [(r, stored_view(r, base)) for r in platform.registry.page(after, limit)]

        found = await asyncio.to_thread(page)
        if len(found) == limit:
            last = found[-1][0]
            nxt = f"{last.owner}/{last.name}"
            response.headers["x-next-cursor"] = nxt
            url = request.url.include_query_params(cursor=nxt, limit=limit)
            response.headers["link"] = f'<{url}>; rel="next"'
        return [{**view, **live_view(record)} for record, view in found]

    @api.get("/api/v1/apps/{name}/openapi.json")
    async def app_openapi(name: str) -> dict[str, Any]:
        record = await asyncio.to_thread(platform.registry.get, owner, name)
        if record.spec.openapi is None:
            raise HTTPException(404, f"app {name!r} has no OpenAPI document")
        return record.spec.openapi

    @api.get("/api/v1/apps/{name}")
    async def show_app(name: str, request: Request) -> dict[str, Any]:
        return app_view(await asyncio.to_thread(platform.registry.get, owner, name), request)

    @api.delete("/api/v1/apps/{name}")
    async def delete_app(name: str) -> dict[str, str]:
        await asyncio.to_thread(platform.registry.delete, owner, name)
        # Its queue ends with it: running requests stop before its runners do, and what
        # waits completes with app_deleted once no new request can join.
        platform.queue.stop_running(owner, name)
        await platform.controller.remove(owner, name)
        await platform.queue.end_app(owner, name)
        return {"deleted": name}

    @api.post("/api/v1/apps/{name}/restart")
    async def restart_app(name: str, request: Request) -> dict[str, Any]:
        """Roll every runner (e.g. to pick up changed secrets): the same code as a new
        revision, rolled out ready-first like any deploy."""
        current = await asyncio.to_thread(platform.registry.get, owner, name)
        record = await asyncio.to_thread(
            platform.registry.deploy, owner, current.spec, current.public
        )
        platform.controller.apply(record)
        return app_view(record, request)

    @api.get("/api/v1/apps/{name}/revisions")
    async def app_revisions(name: str) -> list[dict[str, Any]]:
        """Every revision, newest first; `current` marks the one deployed."""
        current = (await asyncio.to_thread(platform.registry.get, owner, name)).revision
        return [
            {"revision": number, "created_at": created, "current": number == current,
             "kind": spec.kind, "entry": spec.entry, "bundle_digest": spec.bundle_digest,
             "endpoints": _endpoints(spec.openapi)}
            for number, created, spec in await asyncio.to_thread(
                platform.registry.revisions, owner, name
            )
        ]  # fmt: skip

    @api.post("/api/v1/apps/{name}/rollback")
    async def rollback_app(name: str, body: RollbackRequest, request: Request) -> dict[str, Any]:
        """Deploy an earlier revision's code and options again, as a new revision (rolled
        out ready-first like any deploy); live scaling changes stay."""
        current = await asyncio.to_thread(platform.registry.get, owner, name)
        revisions = await asyncio.to_thread(platform.registry.revisions, owner, name)
        found = [s for n, _, s in revisions if n == body.revision]
        if not found:
            raise HTTPException(404, f"app {name!r} has no revision {body.revision}")
        spec = found[0]
        if not spec.bundle_digest or not (data_dir / "bundles" / spec.bundle_digest).is_dir():
            raise HTTPException(
                409, f"revision {body.revision}'s code bundle is gone; deploy it again"
            )
        # Its environment may have been collected since: built again (or found).
        spec = await with_environment(spec)
        record = await asyncio.to_thread(platform.registry.deploy, owner, spec, current.public)
        platform.controller.apply(record)
        return app_view(record, request)

    @api.patch("/api/v1/apps/{name}/scaling")
    async def scale_app(name: str, changes: dict[str, Any], request: Request) -> dict[str, Any]:
        record = await asyncio.to_thread(platform.registry.scale, owner, name, changes)
        platform.controller.apply(record)
        return app_view(record, request)

    def runners_of(name: str | None) -> list[dict[str, Any]]:
        out = []
        for (_, app), dep in platform.controller.deployments.items():
            if name is None or app == name:
                out += [runner_view(r) for r in (*dep.runners.values(), *dep.ended)]
        return sorted(out, key=lambda v: v["created_at"])

    @api.get("/api/v1/apps/{name}/runners")
    async def app_runners(name: str) -> list[dict[str, Any]]:
        await asyncio.to_thread(platform.registry.get, owner, name)  # 404 for an unknown app
        return runners_of(name)

    @api.get("/api/v1/runners")
    async def all_runners() -> list[dict[str, Any]]:
        return runners_of(None)

    @api.post("/api/v1/runners/{runner_id}/stop")
    async def stop_runner(runner_id: str) -> dict[str, Any]:
        runner = await platform.controller.stop_runner(runner_id)
        if runner is None:
            raise HTTPException(404, f"no live runner {runner_id!r}; see `tidal runners list`")
        return runner_view(runner)

    @api.get("/api/v1/apps/{name}/logs")
    async def logs(
        name: str, lines: int = 100, follow_: bool = Query(False, alias="follow")
    ) -> Response:
        if not app_log_files(data_dir, owner, name):
            await asyncio.to_thread(platform.registry.get, owner, name)  # 404: unknown app
        if follow_:
            return StreamingResponse(follow(data_dir, owner, name, lines), media_type="text/plain")
        text = "".join(
            f"[{p.stem}] {line}\n"
            for p in app_log_files(data_dir, owner, name)
            for line in tail(p, lines)
        )
        return Response(text, media_type="text/plain")

    return api
