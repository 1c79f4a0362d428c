"""One platform process: control API, gateway, scaling and a backend, on one port."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from functools import partial
from typing import Any

import uvicorn
from fastapi import FastAPI

from tidal.backends.registry import open_backends
from tidal.config import LOCAL_OWNER, PlatformConfig, platform_id
from tidal.control.api import build_api
from tidal.control.apps_api import apps_router
from tidal.control.changes import ChangeListener
from tidal.control.data_api import data_router
from tidal.control.db import open_database
from tidal.control.deploy_api import deploy_router
from tidal.control.image_step import ImageStep
from tidal.control.keys import KeyStore
from tidal.control.keys_api import keys_router
from tidal.control.open_api import open_router
from tidal.control.queue_admin import queue_admin_router
from tidal.control.queue_store import QueueStore
from tidal.control.registry import NotFound, Registry
from tidal.control.runners_api import runners_router
from tidal.control.secrets import SecretStore
from tidal.control.secrets_api import secrets_router
from tidal.control.system_api import system_router
from tidal.control.views import AppViews
from tidal.dashboard import Dashboard
from tidal.domain.app import AppRecord
from tidal.environments import Environments
from tidal.gateway.auth import Authenticator
from tidal.gateway.browser import BrowserSessions
from tidal.gateway.intake import BoundedHttpProtocol
from tidal.gateway.proxy import Gateway
from tidal.gateway.queue import QueueService, queue_router
from tidal.gateway.queue_fast import queue_fast_path
from tidal.gateway.upstream import HttpProber
from tidal.machines import load_machines
from tidal.observe.metrics import CONTENT_TYPE as METRICS_TYPE
from tidal.observe.records import Recorder
from tidal.observe.records_api import records_router
from tidal.scaling.controller import Controller, Deployment
from tidal.scaling.placement import Inventory
from tidal.storage.data import data_root
from tidal.storage.files import FileServer, files_dir, runner_env

log = logging.getLogger("tidal")


class Platform:
    """The ASGI app of `tidal server`: /api/v1/* is the control plane, the rest the gateway."""

    owner = LOCAL_OWNER

    def __init__(self, config: PlatformConfig) -> None:
        self.config = config
        self._follower: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()
        self.changes: ChangeListener | None = None  # PostgreSQL's app-change notifications
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = engine = open_database(config.database_url or config.data_dir / "tidal.db")
        self.registry = Registry(engine)
        self.secrets = SecretStore.for_platform(engine, config)
        self.keys = KeyStore(engine)
        self.auth = Authenticator.for_platform(self.keys, config, self._is_public)
        self.files = FileServer(files_dir(config.data_dir))
        self.backends = open_backends(
            config,
            runner_env(files_dir(config.data_dir), config.host, config.port, config.scheme),
        )
        host, catalog = load_machines(config.machines)
        self.inventory = Inventory(host, catalog)
        self.environments = Environments(config.data_dir)
        self.controller = Controller(
            config,
            self.backends.usable,
            self.inventory,
            HttpProber(),
            secrets=self.secrets.env_for,
        )
        self.gateway = Gateway(self.controller)
        self.controller.on_runner_ended.append(self.gateway.forget)
        self.controller.on_openapi_found.append(self._keep_openapi)
        self.queue = QueueService(
            QueueStore(engine, holder=platform_id(config.data_dir)), self.controller, self.gateway
        )
        self.images = ImageStep(self.backends, config.data_dir / "bundles", self.secrets.env_for)
        # Each router of the control API is handed the services it uses.
        views = AppViews(self.controller, config, self.backends)
        self.api = build_api()
        self.api.include_router(
            system_router(config, self.backends, self.inventory, self.auth.is_admin)
        )
        self.api.include_router(
            deploy_router(
                self.owner,
                config,
                self.registry,
                self.controller,
                self.backends,
                self.inventory,
                self.environments,
                self.images,
                views,
            )
        )
        self.api.include_router(
            apps_router(
                self.owner,
                config.data_dir / "bundles",
                self.registry,
                self.controller,
                self.queue,
                self.environments,
                views,
            )
        )
        self.api.include_router(
            runners_router(self.owner, config.data_dir, self.registry, self.controller)
        )
        self.api.include_router(secrets_router(self.secrets, self.owner))
        self.api.include_router(keys_router(self.keys))
        check_app = partial(self.registry.get, self.owner)
        self.api.include_router(
            data_router(data_root(config.data_dir), config.data_upload_limit_bytes, check_app)
        )
        self.api.include_router(queue_admin_router(engine, self.queue, self.owner, check_app))
        self.queue_api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        self.queue_api.include_router(queue_router(self.queue, self._deployment))
        self.queue_fast = queue_fast_path(self.queue, self._deployment)
        # Every request's record (analytics, errors, /metrics) and the web dashboard.
        self.recorder = Recorder.for_platform(self)
        self.api.include_router(records_router(self.recorder.store, self.owner, config.data_dir))
        self.dashboard = Dashboard(self)
        # Private apps in a browser: sessions kept with the dashboard's (tidal.gateway.browser).
        self.auth.browser = BrowserSessions(
            self.dashboard.sessions, self.keys, config.scheme == "https"
        )
        self.api.include_router(
            open_router(self.registry, self.auth.browser, self.owner, self.auth.enabled)
        )

    def _deployment(self, owner: str, app: str) -> Deployment | None:
        return self.controller.deployments.get((owner, app))

    def _is_public(self, owner: str, app: str) -> bool:
        dep = self.controller.deployments.get((owner, app))
        return dep is not None and dep.record.public

    def _keep_openapi(self, record: AppRecord, document: dict[str, Any]) -> None:
        # Stored off the event loop (a task holds the only reference until it is done).
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(
                self.registry.set_openapi, record.owner, record.name, record.revision, document
            )
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        dep = self.controller.deployments.get((record.owner, record.name))
        if dep is not None and dep.record.revision == record.revision:
            dep.record.spec.openapi = document

    async def startup(self) -> None:
        for backend in self.backends:
            reaped = backend.reap_orphans()
            if reaped:
                log.warning(
                    "stopped %d %s runner(s) left over from an earlier platform process",
                    reaped,
                    backend.name,
                )
        records = self.registry.list()
        for record in records:
            self.controller.apply(record)
        removed = self.environments.collect_garbage(
            {r.spec.environment for r in records if r.spec.environment},
            self.config.environment_ttl_seconds,
        )
        if removed:
            log.info("removed %d unused environment(s)", len(removed))
        self.queue.start()
        self.recorder.start()
        # Everything made until now (modules, the apps' records) lives as long as the
        # process: keep it out of the collector's full passes, which otherwise scan it
        # all and pause every request in flight (tens of ms under load).
        gc.freeze()
        if self.config.database_url:  # other platforms may change apps in it
            self._follower = asyncio.create_task(self._follow_registry())

    async def _follow_registry(self) -> None:
        """Apps deployed, scaled, rolled back or deleted through another platform on the
        same database take effect here too: at once on PostgreSQL's notification
        (tidal.control.changes), and at the latest within `registry_poll_seconds`."""
        changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        if self.engine.dialect.name == "postgresql" and self.config.registry_listen:
            self.changes = ChangeListener(
                self.engine, lambda: loop.call_soon_threadsafe(changed.set)
            )
            self.changes.start()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self.config.registry_poll_seconds)
            changed.clear()
            try:
                await self._sync_registry()
            except Exception:  # the database may be away for a moment: next time
                log.exception("reading the apps from the shared database failed")

    async def _sync_registry(self) -> None:
        versions = await asyncio.to_thread(self.registry.versions)
        for key in [k for k in self.controller.deployments if k not in versions]:
            self.queue.stop_running(*key)
            await self.controller.remove(*key)
            await self.queue.end_app(*key)
        for key, version in versions.items():
            dep = self.controller.deployments.get(key)
            if dep is None or (dep.record.revision, dep.record.updated_at) != version:
                with contextlib.suppress(NotFound):  # deleted this instant
                    self.controller.apply(await asyncio.to_thread(self.registry.get, *key))

    async def shutdown(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
        if self.changes is not None:
            await asyncio.to_thread(self.changes.stop)
        await self.queue.close()
        await self.controller.shutdown()
        await self.gateway.close()
        await self.recorder.close()
        self.engine.dispose()  # a PostgreSQL pool's connections closed, not left to the GC

    async def queue_http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """fal's queue API: its frequent calls on the fast path, the rest by the router.
        The one entry for `/queue/...` and the dashboard's `/dashboard/queue/...`."""
        if not await self.queue_fast(scope, receive, send):
            await self.queue_api(scope, receive, send)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        # API keys for every path family (/api/v1/health and /files/ stay open): see
        # tidal.gateway.auth. A refusal has been answered when admit() is False.
        if (
            kind != "lifespan"
            and self.auth.enabled
            and not await self.auth.admit(scope, receive, send)
        ):
            return
        if kind == "http":
            if scope["path"].startswith("/api/"):
                await self.api(scope, receive, send)
            elif scope["path"].startswith("/queue/"):
                await self.queue_http(scope, receive, send)
            elif scope["path"].startswith("/files/"):
                await self.files(scope, receive, send)
            elif scope["path"] == "/dashboard" or scope["path"].startswith("/dashboard/"):
                await self.dashboard(scope, receive, send)
            elif scope["path"] == "/metrics":
                await self._metrics(send)
            else:
                await self.gateway(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await self.gateway.websocket(scope, receive, send)

    async def _metrics(self, send: Any) -> None:
        assert self.recorder.metrics is not None
        body = self.recorder.metrics.render().encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", METRICS_TYPE.encode()), (b"content-length", b"%d" % len(body))]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def uvicorn_config(platform: Platform) -> uvicorn.Config:
    return uvicorn.Config(
        platform,
        host=platform.config.host,
        port=platform.config.port,
        loop="uvloop",
        http=BoundedHttpProtocol.with_limits(
            platform.config.header_limit_bytes,
            platform.config.header_timeout_seconds,
            platform.config.body_idle_timeout_seconds,
        ),
        lifespan="on",
        # The gateway returns the runner's own Server and Date headers, not ours.
        server_header=False,
        date_header=False,
        access_log=False,
        # The gateway sets X-Forwarded-* itself from the socket; trusting a caller's is wrong.
        proxy_headers=False,
        log_level="warning",
        timeout_graceful_shutdown=int(platform.config.stop_grace_seconds) + 5,
        ssl_certfile=platform.config.tls_certfile,
        ssl_keyfile=platform.config.tls_keyfile,
    )


def serve(config: PlatformConfig) -> None:
    uvicorn.Server(uvicorn_config(Platform(config))).run()
