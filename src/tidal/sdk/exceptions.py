"""Exceptions an endpoint raises to answer with an error, as fal's `fal.exceptions`.

An endpoint that raises one of these gets the answer fal gives for it, not a 500:

- `FieldException(field, message)`: 422 (or its `status_code`) with pydantic's shape,
  `{"detail": [{"loc": ["body", field], "msg": message, "type": type}]}`, so a
  client shows it next to the input field just as a validation error;
- `AppException(message, status_code)`: `{"detail": message}` with that status;
- `RequestCancelledException`: 499 (the caller went away);
- `GPUException` and a CUDA out-of-memory `RuntimeError`: 503, which the queue
  retries on another run (fal's rule for a bad worker).

Standard library only: runners import it on the error path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CUDA_OOM_MESSAGE = "CUDA error: out of memory"
GPU_ERROR_STATUS = 503
CANCELLED_STATUS = 499  # not an official code; nginx's "client closed request"


class ServerlessException(Exception):
    """The base of every exception here (fal's `FalServerlessException`)."""


@dataclass
class AppException(ServerlessException):
    """Answer the request with `{"detail": message}` and `status_code`."""

    message: str
    status_code: int

    def __str__(self) -> str:
        return self.message


@dataclass
class FieldException(ServerlessException):
    """One input field is wrong: answered as pydantic's validation error for `field`."""

    field: str
    message: str
    status_code: int = 422
    type: str = "value_error"
    # fal bills the request by this many units; tidal passes it on as a header.
    billable_units: int | float | str | None = 0

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def to_pydantic_format(self) -> dict[str, list[dict[str, Any]]]:
        return {"detail": [{"loc": ["body", self.field], "msg": self.message, "type": self.type}]}


@dataclass
class RequestCancelledException(ServerlessException):
    message: str = "Request cancelled by the client."

    def __str__(self) -> str:
        return self.message


@dataclass
class FileTooLargeError(ServerlessException):
    message: str = "File is too large."

    def __str__(self) -> str:
        return self.message


@dataclass
class GPUException(AppException):
    message: str = "GPU error"
    status_code: int = GPU_ERROR_STATUS


@dataclass
class GPUOutOfMemoryException(GPUException):
    pass


@dataclass
class CUDAOutOfMemoryException(GPUOutOfMemoryException):
    message: str = CUDA_OOM_MESSAGE


def is_cuda_out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory errors (a RuntimeError with one message)."""
    if not isinstance(exc, RuntimeError) or len(exc.args) != 1 or not isinstance(exc.args[0], str):
        return False
    msg = exc.args[0]
    return ("CUDA" in msg and "out of memory" in msg) or "CUDNN_STATUS_INTERNAL_ERROR" in msg


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    body: bytes
    headers: dict[str, str]


def error_answer(exc: BaseException) -> ErrorAnswer | None:
    """The HTTP answer fal gives for `exc`, or None when it is an ordinary failure (500)."""
    headers: dict[str, str] = {}
    body: Any
    if isinstance(exc, FieldException):
        body, status = exc.to_pydantic_format(), exc.status_code
        if exc.billable_units:
            units = float(exc.billable_units)
            headers["x-fal-billable-units"] = format(
                units, ".0f" if isinstance(exc.billable_units, int) else ".8f"
            )
    elif isinstance(exc, AppException):
        body, status = {"detail": exc.message}, exc.status_code
    elif isinstance(exc, RequestCancelledException):
        body, status = {"detail": exc.message}, CANCELLED_STATUS
    elif is_cuda_out_of_memory(exc):
        body, status = {"detail": CUDA_OOM_MESSAGE}, GPU_ERROR_STATUS
    else:
        return None
    if not 400 <= status <= 599:
        status = 500  # an exception is never a success
    headers["content-type"] = "application/json"
    return ErrorAnswer(status, json.dumps(body).encode(), headers)
