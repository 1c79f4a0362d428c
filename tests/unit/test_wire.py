"""A plain function's call format (tidal.sdk.wire): what is refused, and how an
exception comes back."""

from __future__ import annotations

import json

import pytest

from tidal.sdk.wire import (
    MAX_CALL_BYTES,
    RemoteException,
    RemoteTraceback,
    WireError,
    decode_answer,
    decode_call,
    encode_call,
    encode_exception,
    encode_result,
)


def test_round_trip_with_code() -> None:
    args, kwargs = decode_call(encode_call((1, lambda x: x * 3), {"k": [1, 2]}))
    assert args[0] == 1 and args[1](2) == 6 and kwargs == {"k": [1, 2]}
    assert decode_answer(200, encode_result({"a": (1, 2)})).value == {"a": (1, 2)}


def test_a_call_from_another_python_is_refused_before_unpickling() -> None:
    message = json.loads(encode_call((), {}))
    message["python"] = "2.7"
    message["call"] = "not even base64 !"
    with pytest.raises(WireError, match=r"pickled by Python 2\.7.*not portable"):
        decode_call(json.dumps(message).encode())
    with pytest.raises(WireError, match="not a tidal function call"):
        decode_call(b'{"hello": 1}')
    with pytest.raises(WireError, match="limit"):
        decode_call(b" " * (MAX_CALL_BYTES + 1))


class Local(Exception):
    pass


def test_exceptions_come_back_with_the_remote_traceback() -> None:
    try:
        raise Local("boom")
    except Local as exc:
        body = encode_exception(exc, module="runner_copy")
    error = decode_answer(500, body, module=__name__).error
    assert isinstance(error, Local) and str(error) == "boom"
    assert isinstance(error.__cause__, RemoteTraceback)
    assert 'raise Local("boom")' in str(error.__cause__)
    # A class the caller cannot import still arrives, by name.
    message = json.loads(body)
    message["exception"] = None
    fallback = decode_answer(500, json.dumps(message).encode()).error
    assert isinstance(fallback, RemoteException)
    assert fallback.exception_type.endswith("Local") and "boom" in str(fallback)
    with pytest.raises(WireError, match="without a function result"):
        decode_answer(502, b"Bad Gateway")
