"""Checking OpenAPI documents that users hand us (function metadata) or that a
runner serves, with FastAPI's own pydantic models of the specification."""

from __future__ import annotations

from typing import Any

from fastapi.openapi.models import OpenAPI
from pydantic import ValidationError


def openapi_problem(document: Any) -> str | None:
    """Why `document` is not an OpenAPI document, in one line; None when it is."""
    if not isinstance(document, dict):
        return f"expected a JSON object, got {type(document).__name__}"
    if not str(document.get("openapi", "")).startswith("3."):
        return "the 'openapi' field must name a 3.x version, e.g. '3.1.0'"
    try:
        OpenAPI.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"at {where}: {first['msg']}{more}"
    return None
