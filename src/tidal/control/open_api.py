"""`POST /api/v1/apps/{name}/open`: a link that opens a private app in a browser
(`tidal apps open APP`). The link holds a one-time token, valid a minute, that the
gateway exchanges for a browser session cookie for that app (tidal.gateway.browser)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from tidal.control.registry import Registry
from tidal.gateway.browser import LINK_PARAM, LINK_SECONDS, BrowserSessions

KEY_ID = "tidal.key_id"  # set in the ASGI scope by tidal.gateway.auth for /api/ calls


def open_router(
    registry: Registry, browser: BrowserSessions, owner: str, auth_enabled: bool
) -> APIRouter:
    # A plain `def`: FastAPI runs it in its thread pool, off the event loop.
    router = APIRouter(prefix="/api/v1/apps", tags=["apps"])

    @router.post("/{name}/open")
    def open_app(name: str, request: Request) -> dict[str, Any]:
        """A URL that opens the app's web UI in a browser: as is for a public app or a
        platform without auth, else with a one-time token for a browser session."""
        record = registry.get(owner, name)
        url = f"{str(request.base_url).rstrip('/')}/{owner}/{name}/"
        if record.public or not auth_enabled:
            return {"url": url, "expires_in": None}
        key_id = request.scope.get(KEY_ID)
        if not key_id:
            raise HTTPException(401, "an API key is needed to open a private app")
        token = browser.link_token(key_id, owner, name)
        return {"url": f"{url}?{LINK_PARAM}={token}", "expires_in": LINK_SECONDS}

    return router
