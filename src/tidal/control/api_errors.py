"""The control API's error answers, written into its OpenAPI document.

FastAPI documents only 200 and 422 per operation; the API also answers 401/403 (keys,
tidal.gateway.auth, for every operation), 404 for an unknown name or id in the path,
and the few codes listed per operation below. Documented here, in one place, so that
clients (and the schemathesis run in tests/faults) can rely on the document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

DESCRIPTIONS = {
    400: "The request cannot be done as asked; `detail` says why and what to do.",
    401: "No API key, or a key that is not valid.",
    403: "The API key's scope does not reach the control plane (an admin key does).",
    404: "No such app, revision, runner, key, secret, request or file.",
    409: "The request conflicts with the current state; `detail` says which.",
    413: "The upload is over the platform's limit, named in `detail`.",
    422: "An option or parameter is not valid; `detail` names it.",
}
# (method, path) -> its error answers beyond 401/403 and a path parameter's 404.
EXTRA: dict[tuple[str, str], tuple[int, ...]] = {
    ("put", "/api/v1/bundles/{digest}"): (400, 413),
    ("post", "/api/v1/apps"): (400,),
    ("post", "/api/v1/apps/{name}/rollback"): (409,),
}
ERROR_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {"detail": {}, "error_type": {"type": "string"}},
            "required": ["detail"],
        }
    }
}


def document_errors(api: FastAPI) -> None:
    """Add the error answers to `api`'s OpenAPI document (built at its first request)."""
    build = api.openapi

    def openapi() -> dict[str, Any]:
        document = build()
        for path, operations in document.get("paths", {}).items():
            for method, operation in operations.items():
                codes = {401, 403, *EXTRA.get((method, path), ())}
                if "{" in path:
                    codes.add(404)
                responses = operation.setdefault("responses", {})
                for code in sorted(codes):
                    responses.setdefault(
                        str(code), {"description": DESCRIPTIONS[code], "content": ERROR_BODY}
                    )
        return document

    api.openapi = openapi  # type: ignore[method-assign]
