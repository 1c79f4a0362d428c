"""The secret store: sealed values, the key file's rules, names and values refused clearly."""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, create_engine, text, update

from tidal.control.db import MIGRATIONS, SecretRow, _v1, open_database
from tidal.control.db import database_url as db_url
from tidal.control.secrets import (
    MAX_VALUE_BYTES,
    SecretError,
    SecretNotFound,
    SecretsKeyError,
    SecretStore,
    check_name,
)

VALUE = "s3cr3t-unit-value"


@pytest.fixture
def store(engine: Engine, tmp_path: Path) -> SecretStore:
    return SecretStore(engine, tmp_path / "secrets.key")


def new_key(path: Path) -> None:
    path.unlink()
    path.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)


def test_round_trip_per_owner(store: SecretStore) -> None:
    first = store.set("local", "API_TOKEN", VALUE)
    store.set("local", "OTHER", "multi\nline = value with ünïcode")
    store.set("alice", "API_TOKEN", "alice's")
    assert store.env_for("local") == {
        "API_TOKEN": VALUE,
        "OTHER": "multi\nline = value with ünïcode",
    }
    assert store.env_for("alice") == {"API_TOKEN": "alice's"}
    assert store.env_for("nobody") == {}
    assert [i.name for i in store.list_for("local")] == ["API_TOKEN", "OTHER"]
    # Replacing keeps the creation time and moves the update time.
    again = store.set("local", "API_TOKEN", "rotated")
    assert again.created_at == first.created_at
    assert again.updated_at >= first.updated_at
    assert store.env_for("local")["API_TOKEN"] == "rotated"
    store.unset("local", "API_TOKEN")
    assert store.env_for("local") == {"OTHER": "multi\nline = value with ünïcode"}
    assert store.env_for("alice") == {"API_TOKEN": "alice's"}
    with pytest.raises(SecretNotFound, match="tidal secrets list"):
        store.unset("local", "API_TOKEN")


def test_the_key_is_created_private_and_reused(engine: Engine, tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "secrets.key"
    old = os.umask(0)  # the file is private whatever the umask
    try:
        SecretStore(engine, key_file).set("local", "A", VALUE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # A later platform process opens the same key and reads what the first sealed.
    assert SecretStore(engine, key_file).env_for("local") == {"A": VALUE}


def test_the_database_holds_no_value_in_clear(store: SecretStore, engine: Engine) -> None:
    store.set("local", "API_TOKEN", VALUE)
    with engine.connect() as conn:
        blob = conn.execute(text("SELECT ciphertext FROM secrets")).scalar_one()
    assert VALUE.encode() not in blob
    # Sealing twice gives different bytes (a fresh nonce each time).
    store.set("local", "API_TOKEN", VALUE)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT ciphertext FROM secrets")).scalar_one() != blob


def test_a_replaced_key_fails_loudly_naming_the_key_file(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "secrets.key"
    SecretStore(engine, key_file).set("local", "API_TOKEN", VALUE)
    new_key(key_file)
    with caplog.at_level(logging.ERROR, logger="tidal.secrets"):
        store = SecretStore(engine, key_file)
    assert str(key_file) in caplog.text and "local/API_TOKEN" in caplog.text
    with pytest.raises(SecretsKeyError) as info:
        store.env_for("local")
    message = str(info.value)
    assert str(key_file) in message and "API_TOKEN" in message and "another key" in message
    assert "tidal secrets set API_TOKEN" in message and VALUE not in message
    assert store.unreadable() == [("local", "API_TOKEN")]
    # Names stay listable and removable; setting it again under the new key repairs it.
    assert [i.name for i in store.list_for("local")] == ["API_TOKEN"]
    store.set("local", "API_TOKEN", "new")
    assert store.env_for("local") == {"API_TOKEN": "new"}
    assert store.unreadable() == []


def test_a_lost_key_is_not_silently_replaced_by_garbage(engine: Engine, tmp_path: Path) -> None:
    key_file = tmp_path / "secrets.key"
    SecretStore(engine, key_file).set("local", "API_TOKEN", VALUE)
    key_file.unlink()  # a new key is created, and the old value is refused, not mangled
    with pytest.raises(SecretsKeyError, match=str(key_file)):
        SecretStore(engine, key_file).env_for("local")


def test_damaged_or_moved_values_do_not_decrypt(store: SecretStore, engine: Engine) -> None:
    store.set("local", "A", VALUE)
    store.set("local", "B", "other")
    with engine.begin() as conn:
        blob_a = conn.execute(text("SELECT ciphertext FROM secrets WHERE name='A'")).scalar_one()
        # B's row given A's sealed value: the name is bound into the seal.
        conn.execute(update(SecretRow).where(SecretRow.name == "B").values(ciphertext=blob_a))
    with pytest.raises(SecretsKeyError, match="damaged or was altered"):
        store.env_for("local")
    with engine.begin() as conn:
        flipped = blob_a[:-1] + bytes([blob_a[-1] ^ 1])
        conn.execute(update(SecretRow).where(SecretRow.name == "A").values(ciphertext=flipped))
    with pytest.raises(SecretsKeyError, match="2 secrets do not decrypt"):
        store.env_for("local")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o610])
def test_a_key_file_others_can_read_is_refused(engine: Engine, tmp_path: Path, mode: int) -> None:
    key_file = tmp_path / "secrets.key"
    SecretStore(engine, key_file)
    key_file.chmod(mode)
    with pytest.raises(SecretsKeyError) as info:
        SecretStore(engine, key_file)
    assert str(key_file) in str(info.value)
    assert f"chmod 600 {key_file}" in str(info.value)
    assert f"{mode:04o}" in str(info.value)
    key_file.chmod(0o400)  # read-only for its owner is fine
    SecretStore(engine, key_file)


def test_a_malformed_key_file_is_refused(engine: Engine, tmp_path: Path) -> None:
    key_file = tmp_path / "secrets.key"
    for content in ("", "not base64 at all!", base64.urlsafe_b64encode(b"short").decode()):
        key_file.write_text(content)
        key_file.chmod(0o600)
        with pytest.raises(SecretsKeyError, match="does not hold a tidal secrets key"):
            SecretStore(engine, key_file)
    key_file.unlink()
    key_file.mkdir()
    with pytest.raises(SecretsKeyError, match="not a regular file"):
        SecretStore(engine, key_file)


def test_the_configured_key_file_is_used_and_must_exist(engine: Engine, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    configured = tmp_path / "elsewhere" / "tidal.key"
    config = SimpleNamespace(data_dir=data_dir, secrets_key_file=configured)
    with pytest.raises(SecretsKeyError, match=f"{configured} does not exist"):
        SecretStore.for_platform(engine, config)
    configured.parent.mkdir()
    configured.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode())
    configured.chmod(0o600)
    store = SecretStore.for_platform(engine, config)
    assert store.key_file == configured
    assert not (data_dir / "secrets.key").exists()
    # Without the setting (as today's PlatformConfig), the data directory's key is made.
    default = SecretStore.for_platform(engine, SimpleNamespace(data_dir=data_dir))
    assert default.key_file == data_dir / "secrets.key"
    assert stat.S_IMODE(default.key_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["A", "_", "API_TOKEN", "HF_TOKEN2", "_PRIVATE", "X" * 128])
def test_valid_names(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize(
    ("name", "fix"),
    [
        ("api_token", "API_TOKEN"),
        ("1TOKEN", "_1TOKEN"),
        ("MY-TOKEN", "MY_TOKEN"),
        ("MY TOKEN", "MY_TOKEN"),
        ("", "uppercase letters"),
        ("TOKEN=X", "uppercase letters"),
        ("ÉTÉ", "uppercase letters"),
        ("TIDAL_TOKEN", "reserved"),
        ("TIDAL_", "reserved"),
        ("PATH", "set by the platform"),
        ("CUDA_VISIBLE_DEVICES", "set by the platform"),
        ("X" * 129, "longer than 128"),
    ],
)
def test_invalid_names_say_how_to_fix_them(store: SecretStore, name: str, fix: str) -> None:
    with pytest.raises(SecretError, match=fix):
        store.set("local", name, VALUE)
    assert store.list_for("local") == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        ("s3cr3t\x00tail", "NUL byte"),
        ("s3cr3t" + "x" * MAX_VALUE_BYTES, "64 KiB limit"),
        ("s3cr3t\ud800", "not valid Unicode"),
    ],
)
def test_refused_values_are_never_quoted(store: SecretStore, value: str, problem: str) -> None:
    with pytest.raises(SecretError, match=problem) as info:
        store.set("local", "API_TOKEN", value)
    assert "s3cr3t" not in str(info.value)
    assert "API_TOKEN" in str(info.value)


def test_a_value_of_exactly_the_limit_is_kept(store: SecretStore) -> None:
    big = "é" * (MAX_VALUE_BYTES // 2)  # 2 bytes each in UTF-8
    store.set("local", "BIG", big)
    assert store.env_for("local")["BIG"] == big


def test_an_owners_secrets_must_fit_a_runners_environment(store: SecretStore) -> None:
    value = "v" * MAX_VALUE_BYTES
    for i in range(15):
        store.set("local", f"S{i}", value)
    with pytest.raises(SecretError, match="tidal secrets unset"):
        store.set("local", "S15", value)
    store.set("local", "S0", "smaller")  # replacing one counts its new size only
    store.set("local", "S15", value)


def test_values_never_show_in_reprs_or_lists(store: SecretStore) -> None:
    info = store.set("local", "API_TOKEN", VALUE)
    env = store.env_for("local")
    shown = [repr(store), str(store), repr(info), str(info), repr(env), str(env), f"{env}"]
    shown += [repr(store.list_for("local")), repr([i.view() for i in store.list_for("local")])]
    for text_ in shown:
        assert VALUE not in text_, text_
    assert "API_TOKEN" in repr(env)
    assert info.view().keys() == {"name", "created_at", "updated_at"}
    assert dict(env) == {"API_TOKEN": VALUE}  # still a plain mapping for the launch env


def test_a_version_1_database_gains_the_secrets_table(tmp_path: Path, database_url: str) -> None:
    old = create_engine(db_url(database_url))
    with old.begin() as conn:
        _v1(conn)
        conn.execute(text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO schema_version (version) VALUES (1)"))
    old.dispose()
    engine = open_database(database_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT max(version) FROM schema_version")).scalar()
        assert version == len(MIGRATIONS)
        store = SecretStore(engine, tmp_path / "secrets.key")
        store.set("local", "A", VALUE)
        assert store.env_for("local") == {"A": VALUE}
    finally:
        engine.dispose()
