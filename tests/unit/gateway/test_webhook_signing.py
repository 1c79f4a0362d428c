"""Webhook signing: what a receiver checks, and the secret's file."""

from __future__ import annotations

import hashlib
import hmac
import stat
import time
from pathlib import Path

from tidal.control.queue_store import QueuedRequest
from tidal.gateway.webhooks import load_secret, payload_of, sign, valid_url, verify

BODY = b'{"request_id":"abc","status":"OK"}'


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign("s3cret", 1700000000, BODY) == f"v1={expected}"
    assert sign(b"s3cret", "1700000000", BODY) == f"v1={expected}"


def test_verify_accepts_the_signature_and_rejects_any_change() -> None:
    ts = str(int(time.time()))
    signature = sign("s3cret", ts, BODY)
    assert verify("s3cret", ts, BODY, signature)
    assert not verify("other", ts, BODY, signature)
    assert not verify("s3cret", str(int(ts) + 1), BODY, signature)
    assert not verify("s3cret", ts, BODY + b" ", signature)
    other_digit = "1" if signature[-1] == "0" else "0"  # a digit it is not
    assert not verify("s3cret", ts, BODY, signature[:-1] + other_digit)
    assert not verify("s3cret", ts, BODY, "garbage")


def test_verify_with_max_age_rejects_old_or_bad_timestamps() -> None:
    old = str(int(time.time()) - 3600)
    assert verify("k", old, BODY, sign("k", old, BODY))
    assert not verify("k", old, BODY, sign("k", old, BODY), max_age_s=300)
    now = str(int(time.time()))
    assert verify("k", now, BODY, sign("k", now, BODY), max_age_s=300)
    assert not verify("k", "soon", BODY, sign("k", "soon", BODY), max_age_s=300)


def test_the_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_secret(tmp_path)
    assert len(first) == 64
    assert stat.S_IMODE((tmp_path / "webhook.secret").stat().st_mode) == 0o600
    assert load_secret(tmp_path) == first


def _item(**kw: object) -> QueuedRequest:
    base: dict[str, object] = dict(
        id="r1", owner="o", app="a", method="POST", path="/", query="", headers=[], body=b"",
        status="COMPLETED", attempts=1, created_at=0.0, started_at=None, completed_at=None,
        response_status=200, response_headers=[], response_body=b'{"x": 1}', error=None,
        error_type=None, webhook_url="http://127.0.0.1:1/hook",
    )  # fmt: skip
    base.update(kw)
    return QueuedRequest(**base)  # type: ignore[arg-type]


def test_payloads() -> None:
    assert payload_of(_item()) == {
        "request_id": "r1", "gateway_request_id": "r1", "status": "OK", "payload": {"x": 1},
        "error": None,
    }  # fmt: skip
    failed = payload_of(_item(response_status=422, response_body=b'{"detail": "bad"}',
                              error="bad", error_type="http_422"))  # fmt: skip
    assert (failed["status"], failed["error"], failed["payload"]) == (
        "ERROR", "bad", {"detail": "bad"},
    )  # fmt: skip
    cancelled = payload_of(_item(response_status=None, response_body=None,
                                 error="the request was cancelled"))  # fmt: skip
    assert (cancelled["status"], cancelled["payload"]) == ("ERROR", None)


def test_valid_url() -> None:
    assert valid_url("https://example.com/hook?x=1")
    assert valid_url("http://127.0.0.1:8080/")
    assert not valid_url("ftp://example.com/")
    assert not valid_url("not a url")
    assert not valid_url("")
