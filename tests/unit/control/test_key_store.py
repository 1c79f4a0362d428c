"""The API key store and the checks in front of the platform's paths."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tidal.control import keys as keys_module
from tidal.control.keys import (
    ADMIN,
    INVOKE,
    InvalidKeyRequest,
    KeyNotFound,
    KeyStore,
    parse_key,
)
from tidal.gateway.auth import Authenticator


@pytest.fixture
def store(engine: Engine) -> KeyStore:
    return KeyStore(engine)


def test_create_prints_id_and_secret_and_stores_only_a_hash(
    store: KeyStore, engine: Engine, tmp_path: Path
) -> None:
    info, key = store.create(INVOKE, name="ci")
    key_id, _, secret = key.partition(":")
    assert key_id == info.id and key_id.startswith("tk_") and len(key_id) == 15
    assert len(secret) == 32 and parse_key(key) == (key_id, secret)
    assert info.scope == INVOKE and info.name == "ci" and info.last_used_at is None
    with engine.connect() as conn:
        stored = repr(conn.execute(text("SELECT * FROM api_keys")).all()).encode()
    engine.dispose()  # the WAL folded into the file (SQLite)
    on_disk = stored + b"".join(p.read_bytes() for p in tmp_path.glob("tidal.db*"))
    assert key_id.encode() in on_disk
    assert secret.encode() not in on_disk
    assert secret not in repr(store) and secret not in repr(info) and "secret" not in info.view()


def test_verify_accepts_the_key_and_refuses_others(store: KeyStore) -> None:
    info, key = store.create(ADMIN)
    assert store.verify(key) == info
    key_id, _, secret = key.partition(":")
    other = ("A" if secret[0] != "A" else "B") + secret[1:]
    for wrong in (f"{key_id}:{other}", "tk_000000000000:" + secret, "", key_id, f"{key}x"):
        assert store.verify(wrong) is None, wrong
    # A fresh store (a restarted platform) reads the hash back from the database.
    assert KeyStore(store._engine).verify(key) is not None


def test_revoke_stops_the_key_at_once(store: KeyStore) -> None:
    info, key = store.create(INVOKE)
    assert store.verify(key) is not None  # now cached
    store.revoke(info.id)
    assert store.verify(key) is None
    assert KeyStore(store._engine).verify(key) is None
    assert [k.id for k in store.list()] == []
    with pytest.raises(KeyNotFound):
        store.revoke(info.id)
    with pytest.raises(KeyNotFound):
        store.revoke("tk_nothere0000")


def test_a_key_revoked_through_another_platform_stops_within_seconds(engine: Engine) -> None:
    here, there = KeyStore(engine), KeyStore(engine)  # two platforms, one database
    info, key = there.create(INVOKE)
    assert here.verify(key) is not None  # cached here
    there.revoke(info.id)
    assert here.verify(key) is not None  # still cached, for at most REVALIDATE_SECONDS
    here._cache[info.id].checked_at -= keys_module.REVALIDATE_SECONDS + 1  # time passes
    assert here.verify(key) is None


def test_a_key_read_again_stays_valid_while_it_is_read(
    store: KeyStore, hold_statements: Any
) -> None:
    """Checks on the event loop read the cache while a thread reads the key again: it
    stays there meanwhile. Dropped first, a key read slowly (under load) was missing,
    read as revoked, and its dashboard sessions were ended: people were signed out."""
    info, key = store.create(ADMIN)
    assert store.active(info.id, load=True) is not None  # cached
    reader = threading.Thread(target=store.refresh, args=(info.id,), name="key-refresh")
    with hold_statements("key-refresh") as held:
        reader.start()
        assert held.wait(10)
        assert store.active(info.id, load=False) is not None
        assert store.verify(key, load=False) is not None
    reader.join(10)
    assert store.active(info.id, load=False) is not None
    store.revoke(info.id)
    store.refresh(info.id)  # a revoked key read again is gone from the cache
    assert store.active(info.id, load=False) is None


def test_scopes_names_and_list(store: KeyStore) -> None:
    with pytest.raises(InvalidKeyRequest):
        store.create("root")
    with pytest.raises(InvalidKeyRequest):
        store.create(INVOKE, name="x" * 200)
    a, _ = store.create(ADMIN, name="ops")
    b, _ = store.create(INVOKE)
    assert [(k.id, k.scope, k.name) for k in store.list()] == [
        (a.id, ADMIN, "ops"),
        (b.id, INVOKE, None),
    ]
    assert store.count() == 2 and store.count(ADMIN) == 1 and store.count(INVOKE) == 1


def test_last_used_is_recorded_and_written_at_most_once_a_minute(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = store.create(INVOKE)
    now = [1000.0]
    monkeypatch.setattr(keys_module.time, "time", lambda: now[0])
    store.verify(key)
    assert store.list()[0].last_used_at == 1000.0
    assert KeyStore(store._engine).list()[0].last_used_at == 1000.0  # written
    now[0] = 1030.0
    store.verify(key)
    assert store.list()[0].last_used_at == 1030.0  # this process knows
    assert KeyStore(store._engine).list()[0].last_used_at == 1000.0  # not yet written
    now[0] = 1100.0
    store.verify(key)
    assert KeyStore(store._engine).list()[0].last_used_at == 1100.0


def test_bootstrap_writes_an_owner_only_admin_key_once(
    store: KeyStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tidal.keys"):
        path = store.bootstrap(tmp_path)
    assert path == tmp_path / "admin.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = path.read_text().strip()
    info = store.verify(key)
    assert info is not None and info.scope == ADMIN
    secret = key.partition(":")[2]
    assert str(path) in caplog.text and info.id in caplog.text and secret not in caplog.text
    assert store.bootstrap(tmp_path) is None  # an admin key exists
    assert path.read_text().strip() == key


# -- the checks in front of the paths ------------------------------------------------


def scope_of(path: str, key: str | None = None, kind: str = "http") -> dict[str, Any]:
    headers = [(b"host", b"x")]
    if key is not None:
        headers.append((b"authorization", f"Key {key}".encode()))
    return {"type": kind, "path": path, "headers": headers}


def auth_for(store: KeyStore, public: frozenset[tuple[str, str]] = frozenset()) -> Authenticator:
    return Authenticator(store, True, lambda o, a: (o, a) in public)


def test_paths_need_the_right_scope(store: KeyStore) -> None:
    _, admin = store.create(ADMIN)
    _, invoke = store.create(INVOKE)
    auth = auth_for(store, frozenset({("local", "open")}))
    status = lambda path, key=None: (auth.check(scope_of(path, key)) or (200,))[0]  # noqa: E731
    assert status("/api/v1/health") == 200
    assert status("/api/v1/apps") == 401
    assert status("/api/v1/apps", invoke) == 403
    assert status("/api/v1/apps", admin) == 200
    assert status("/api/v1/apps", "tk_000000000000:" + "a" * 32) == 401
    assert status("/api/v1/apps", "garbage") == 401
    for path in ("/local/app/x", "/queue/local/app/x", "/queue/local/app/requests/1/status"):
        assert status(path) == 401, path
        assert status(path, invoke) == 200, path
        assert status(path, admin) == 200, path
    # A public app: anyone; /files/: unguessable URLs, open.
    assert status("/local/open/x") == 200 and status("/queue/local/open/x") == 200
    assert status("/files/0123456789abcdef0123456789abcdef/a.png") == 200
    assert status("/") == 401


def test_auth_off_lets_everything_through(store: KeyStore) -> None:
    auth = Authenticator.for_platform(
        store, SimpleNamespace(data_dir=Path("/nonexistent")), lambda o, a: False
    )
    assert not auth.enabled
    assert asyncio.run(auth.admit(scope_of("/api/v1/apps"), None, None)) is True


def test_refusals_are_json_and_never_echo_the_key(store: KeyStore) -> None:
    _, invoke = store.create(INVOKE)
    auth = auth_for(store)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for path, key, code, error_type in (
        ("/api/v1/apps", None, 401, "unauthorized"),
        ("/api/v1/apps", invoke[:-1] + "!", 401, "unauthorized"),
        ("/api/v1/apps", invoke, 403, "forbidden"),
    ):
        sent.clear()
        assert asyncio.run(auth.admit(scope_of(path, key), None, send)) is False
        assert sent[0]["status"] == code
        body = sent[1]["body"].decode()
        assert f'"error_type": "{error_type}"' in body and '"detail"' in body
        assert invoke.partition(":")[2] not in body


def test_the_key_header_is_not_forwarded_to_runners(store: KeyStore) -> None:
    _, invoke = store.create(INVOKE)
    auth = auth_for(store)
    scope = scope_of("/local/app/x", invoke)
    scope["headers"].append((b"authorization", b"Bearer app-own-token"))
    assert auth.check(scope) is None
    assert scope["headers"] == [(b"host", b"x"), (b"authorization", b"Bearer app-own-token")]


def test_websockets_are_closed_without_a_key(store: KeyStore) -> None:
    auth = auth_for(store)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    assert (
        asyncio.run(auth.admit(scope_of("/local/app/ws", kind="websocket"), receive, send)) is False
    )
    assert sent[0]["type"] == "websocket.close" and sent[0]["code"] == 1008
