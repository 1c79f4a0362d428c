"""/api/v1/secrets: set, list and remove an owner's secrets. No answer carries a value.

The body of a PUT is parsed here rather than by a pydantic model: FastAPI's validation
errors echo the input they refused, and a refused secret must not come back in a reply.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from tidal.control.secrets import (
    MAX_VALUE_BYTES,
    SecretError,
    SecretNotFound,
    SecretStore,
)

# A JSON string of MAX_VALUE_BYTES can take up to 6 bytes per byte escaped (\u00XX).
MAX_BODY_BYTES = 6 * MAX_VALUE_BYTES + 1024

_PUT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"value": {"type": "string", "maxLength": MAX_VALUE_BYTES}},
                    "required": ["value"],
                    "additionalProperties": False,
                }
            }
        },
    }
}


def secrets_router(store: SecretStore, owner: str) -> APIRouter:
    router = APIRouter(prefix="/api/v1/secrets", tags=["secrets"])

    @router.get("")
    def list_secrets() -> list[dict[str, Any]]:
        """The owner's secrets: names and times, never values."""
        return [info.view() for info in store.list_for(owner)]

    @router.put("/{name}", openapi_extra=_PUT_BODY)
    async def put_secret(name: str, request: Request) -> dict[str, Any]:
        """Create or replace a secret; runners started from now on see the new value."""
        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_BODY_BYTES:
            raise HTTPException(413, f"the body is above the {MAX_BODY_BYTES // 1024} KiB limit")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise HTTPException(413, f"the body is above the {MAX_BODY_BYTES // 1024} KiB limit")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise HTTPException(400, 'the body must be JSON: {"value": "..."}') from None
        if not isinstance(body, dict) or set(body) != {"value"}:
            raise HTTPException(422, 'the body must be exactly {"value": "..."}')
        value = body["value"]
        if not isinstance(value, str):
            raise HTTPException(422, f"the value of {name} must be a JSON string")
        try:
            info = await asyncio.to_thread(store.set, owner, name, value)
        except SecretError as exc:
            raise HTTPException(422, str(exc)) from None
        return info.view()

    @router.delete("/{name}")
    def delete_secret(name: str) -> dict[str, str]:
        try:
            store.unset(owner, name)
        except SecretNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        return {"deleted": name}

    return router
