"""fal's exceptions as HTTP answers (tidal.sdk.exceptions), and fal's App keywords."""

from __future__ import annotations

import json
import warnings

import pytest

import tidal
from tidal.sdk.app import wrap_app
from tidal.sdk.cached import cached
from tidal.sdk.exceptions import (
    AppException,
    CUDAOutOfMemoryException,
    FieldException,
    RequestCancelledException,
    error_answer,
)
from tidal.spec import InvalidOptionError


def test_field_exception_is_pydantics_shape() -> None:
    answer = error_answer(FieldException("prompt", "too long", billable_units=2))
    assert answer is not None and answer.status == 422
    assert json.loads(answer.body) == {
        "detail": [{"loc": ["body", "prompt"], "msg": "too long", "type": "value_error"}]
    }
    assert answer.headers["x-fal-billable-units"] == "2"
    custom = error_answer(FieldException("seed", "bad", status_code=400, type="range"))
    assert custom is not None and custom.status == 400
    assert json.loads(custom.body)["detail"][0]["type"] == "range"


def test_other_answers() -> None:
    app = error_answer(AppException("quota", 429))
    assert app is not None and (app.status, json.loads(app.body)) == (429, {"detail": "quota"})
    cancelled = error_answer(RequestCancelledException())
    assert cancelled is not None and cancelled.status == 499
    oom = error_answer(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert oom is not None and oom.status == 503  # the queue retries it elsewhere
    assert error_answer(CUDAOutOfMemoryException()) is not None
    assert error_answer(AppException("not an error?", 200)).status == 500  # type: ignore[union-attr]
    assert error_answer(ValueError("x")) is None


def test_fal_app_keywords() -> None:
    with pytest.warns(UserWarning, match="tidal ignores _scheduler_options"):

        class Ok(tidal.App, kind="container", _scheduler_options={"a": 1}):
            pass

    class Attr(tidal.App):
        kind = "virtualenv"

    with pytest.raises(InvalidOptionError, match="kind='conda' is not supported"):

        class Bad(tidal.App, kind="conda"):
            pass

    assert wrap_app(Ok) is Ok
    wrapped = wrap_app(Attr, keep_alive=7)
    assert issubclass(wrapped, Attr) and wrapped.options().keep_alive == 7
    with pytest.raises(TypeError):
        wrap_app(object)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class Quiet(tidal.App, kind="container"):
            pass


def test_cached_calls_once_per_arguments() -> None:
    calls: list[int] = []

    @cached
    def load(n: int) -> list[int]:
        calls.append(n)
        return [n]

    assert load(1) is load(1) and load(2) == [2]
    assert calls == [1, 2]
