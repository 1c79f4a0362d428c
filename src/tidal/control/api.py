"""The control-plane HTTP API under /api/v1. The CLI is only a client of it.

The app itself carries only the errors' answers; each area is a router that is
handed the services it uses (never the whole platform): system_api (health,
machines), deploy_api (bundles, environments, images, deploy), apps_api (apps),
runners_api (runners, logs); server.py adds the rest (secrets, keys, data,
queue admin, records, browser sessions).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tidal import __version__
from tidal.control.api_errors import document_errors
from tidal.control.registry import NotFound
from tidal.spec import InvalidOptionError
from tidal.storage.bundles import BundleError


def build_api() -> FastAPI:
    api = FastAPI(
        title="tidal control plane",
        version=__version__,
        docs_url="/api/v1/docs",
        openapi_url="/api/v1/openapi.json",
        redoc_url=None,
    )

    document_errors(api)

    @api.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @api.exception_handler(InvalidOptionError)
    async def _invalid(request: Request, exc: InvalidOptionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @api.exception_handler(BundleError)
    async def _bundle(request: Request, exc: BundleError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413 if "limit" in str(exc) else 400)

    return api
