"""/api/v1/keys: create, list and revoke API keys. Only the create answer carries a
secret, once; lists show ids, names, scopes and times."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from tidal.control.keys import INVOKE, MAX_NAME_LENGTH, InvalidKeyRequest, KeyNotFound, KeyStore


class CreateKeyRequest(BaseModel):
    scope: str = INVOKE
    name: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)


def keys_router(store: KeyStore) -> APIRouter:
    # Plain `def` handlers: FastAPI runs them in its thread pool, off the event loop.
    router = APIRouter(prefix="/api/v1/keys", tags=["keys"])

    @router.post("", status_code=201)
    def create_key(body: CreateKeyRequest) -> dict[str, Any]:
        """A new key. `key` (`<id>:<secret>`) is in this answer only: it is not stored."""
        try:
            info, key = store.create(body.scope, body.name)
        except InvalidKeyRequest as exc:
            raise HTTPException(422, str(exc)) from None
        return {**info.view(), "key": key}

    @router.get("")
    def list_keys() -> list[dict[str, Any]]:
        """Keys not revoked: ids, names, scopes and times, never secrets."""
        return [info.view() for info in store.list()]

    @router.delete("/{key_id}")
    def revoke_key(key_id: str) -> dict[str, str]:
        """Revoke a key: it stops working at once."""
        try:
            store.revoke(key_id)
        except KeyNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        return {"revoked": key_id}

    return router
