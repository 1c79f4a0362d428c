"""How a plain function's call travels: its arguments from the caller to a runner,
its value or exception back.

The format is fal's: cloudpickle (protocol 5), base64 in a JSON body, so a call
can carry any picklable Python value: lambdas, closures, numpy arrays, a class
defined in the caller's script. Its limits, which it shares with fal:

- the caller's and the runner's Python must have the same major.minor version
  (pickles of code objects are not portable across versions): a mismatch is
  refused with the versions named, before anything is unpickled;
- a value refers to its classes by module: a class from a module the runner
  does not have (or a package at another version) fails to unpickle there;
- unpickling runs code: a runner unpickles only what reached it through the
  gateway, so only callers allowed to call the app (its API keys) can send one;
  never make a plain function's app public;
- a call (arguments) is at most `MAX_CALL_BYTES` as sent, a result at most what
  the gateway and the queue carry.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import sys
import traceback
from dataclasses import dataclass
from typing import Any

FORMAT = "cloudpickle"
CONTENT_TYPE = "application/json"
MAX_CALL_BYTES = 64 * 1024 * 1024
PROTOCOL = 5


class WireError(ValueError):
    """A call or an answer that cannot be read; the message says why."""


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _dumps(value: Any) -> str:
    import cloudpickle  # type: ignore[import-untyped]

    return base64.b64encode(cloudpickle.dumps(value, protocol=PROTOCOL)).decode()


class _Unpickler(pickle.Unpickler):
    """Classes of the runner's copy of the function's module are the caller's own
    (there it is usually `__main__`), so `except MyError:` catches what the runner raised."""

    def __init__(self, data: bytes, aliases: dict[str, str]) -> None:
        super().__init__(io.BytesIO(data))
        self.aliases = aliases

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(self.aliases.get(module, module), name)


def _loads(text: str, aliases: dict[str, str] | None = None) -> Any:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WireError("the pickle is not valid base64") from None
    return _Unpickler(raw, aliases or {}).load()


def encode_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    return json.dumps(
        {"format": FORMAT, "python": python_version(), "call": _dumps((args, kwargs))}
    ).encode()


def _check(message: dict[str, Any], what: str) -> None:
    if message.get("format") != FORMAT:
        raise WireError(f"{what} is not a tidal function call ({FORMAT} in JSON)")
    if message.get("python") != python_version():
        raise WireError(
            f"{what} was pickled by Python {message.get('python')}, and this side runs "
            f"Python {python_version()}; pickles are not portable across Python versions: "
            "call from the same Python, or set the function's python_version"
        )


def decode_call(body: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if len(body) > MAX_CALL_BYTES:
        raise WireError(f"the call is {len(body)} bytes, over the {MAX_CALL_BYTES}-byte limit")
    try:
        message = json.loads(body)
    except ValueError:
        raise WireError("the call is not JSON") from None
    if not isinstance(message, dict):
        raise WireError("the call is not a JSON object")
    _check(message, "the call")
    args, kwargs = _loads(str(message.get("call", "")))
    return tuple(args), dict(kwargs)


def encode_result(value: Any, module: str = "") -> bytes:
    """`module`: the function's module as the runner named it (see `decode_answer`)."""
    return json.dumps(
        {"format": FORMAT, "python": python_version(), "module": module, "result": _dumps(value)}
    ).encode()


def encode_exception(exc: BaseException, module: str = "") -> bytes:
    """The exception (pickled when it can be) with its type, message and traceback."""
    try:
        pickled: str | None = _dumps(exc)
    except Exception:
        pickled = None
    return json.dumps(
        {
            "format": FORMAT,
            "python": python_version(),
            "module": module,
            "detail": f"{type(exc).__name__}: {exc}",
            "error_type": "remote_exception",
            "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "exception": pickled,
            "traceback": "".join(traceback.format_exception(exc)),
        }
    ).encode()


class RemoteTraceback(Exception):
    """The runner's traceback, shown as the cause of an exception re-raised here."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n\nThe function failed on its runner:\n"""\n{self.text}"""'


class RemoteException(Exception):
    """An exception from the runner that cannot be re-created here (its class is
    not importable here); `exception_type` names it."""

    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type


@dataclass(frozen=True)
class Answer:
    value: Any = None
    error: BaseException | None = None


def decode_answer(status: int, body: bytes, module: str = "") -> Answer:
    """The function's value, or its exception (with the remote traceback as cause).
    `module`: the function's module here, standing for the runner's copy of it."""
    try:
        message = json.loads(body)
    except ValueError:
        message = None
    if not isinstance(message, dict) or message.get("format") != FORMAT:
        text = body[:2000].decode("utf-8", "replace")
        raise WireError(f"the runner answered {status} without a function result: {text}")
    _check(message, "the answer")
    theirs = str(message.get("module") or "")
    aliases = {theirs: module} if theirs and module and theirs != module else {}
    if "result" in message:
        return Answer(value=_loads(message["result"], aliases))
    error: BaseException | None = None
    if message.get("exception"):
        try:
            error = _loads(message["exception"], aliases)
        except Exception:
            error = None
    if not isinstance(error, BaseException):
        error = RemoteException(str(message.get("exception_type")), str(message.get("detail")))
    error.__cause__ = RemoteTraceback(str(message.get("traceback", "")))
    return Answer(error=error)
