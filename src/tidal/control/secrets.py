"""Secrets: environment variables for an owner's runners, encrypted at rest.

Each value is sealed with AES-256-GCM under the platform's key before it reaches the
database. The owner and the name are the associated data, so a stored value cannot be
moved to another name or owner without failing to decrypt. The key lives in
`<data_dir>/secrets.key` (created owner-only, 0600), or in the file the platform's
`secrets_key_file` setting names. A key file that group or others can read is refused;
a value sealed under another key fails loudly, naming the key file, never as garbage.

Values leave the store only through `env_for(owner)`, which the controller merges into a
runner's environment at start: nothing here returns, logs or `repr`s a value otherwise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from tidal.control.db import SecretRow

log = logging.getLogger("tidal.secrets")

KEY_FILE_NAME = "secrets.key"
MAX_NAME_LENGTH = 128
MAX_VALUE_BYTES = 64 * 1024
# A process's whole environment must fit in the kernel's argument space (ARG_MAX,
# usually 2 MiB, shared with the command line): keep an owner's secrets well below it.
MAX_TOTAL_BYTES = 1024 * 1024

NAME_RULE = re.compile(r"[A-Z_][A-Z0-9_]*")
RESERVED_PREFIX = "TIDAL_"
# Set by the platform for every runner (placement, the app's environment, logging):
# a secret of that name would be overridden, or break the runner.
RESERVED_NAMES = frozenset(
    {"CUDA_VISIBLE_DEVICES", "PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "VIRTUAL_ENV"}
)

_FORMAT = b"\x01"  # AES-256-GCM, 12-byte nonce, then ciphertext and 16-byte tag
_NONCE = 12
_TAG = 16


class SecretError(ValueError):
    """A name or value the store refuses; the message says how to fix it."""


class SecretNotFound(LookupError):
    pass


class SecretsKeyError(RuntimeError):
    """The key file is missing, unsafe, malformed, or not the key the values were sealed with."""


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown about a secret: never its value."""

    name: str
    created_at: float
    updated_at: float

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": self.created_at, "updated_at": self.updated_at}


class SecretEnv(dict[str, str]):
    """The variables `env_for` returns; its repr names the variables, never their values,
    so that logging a launch by mistake does not leak them."""

    def __repr__(self) -> str:
        return f"SecretEnv({', '.join(sorted(self))})"

    __str__ = __repr__


def check_name(name: str) -> None:
    if not NAME_RULE.fullmatch(name):
        hint = re.sub(r"[^A-Z0-9_]", "_", name.upper())
        if not hint or hint[0].isdigit():
            hint = "_" + hint
        raise SecretError(
            f"{name!r} is not a valid secret name: use uppercase letters, digits and "
            f"underscores, not starting with a digit (e.g. {hint})"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise SecretError(f"secret name {name[:20]}... is longer than {MAX_NAME_LENGTH} characters")
    if name.startswith(RESERVED_PREFIX):
        raise SecretError(
            f"{name!r}: names starting with {RESERVED_PREFIX} are reserved for the platform's "
            f"own variables; choose another name (e.g. {name[len(RESERVED_PREFIX) :] or 'MY_SECRET'})"
        )
    if name in RESERVED_NAMES:
        raise SecretError(
            f"{name!r} is set by the platform for every runner and cannot be a secret; "
            f"choose another name (e.g. APP_{name})"
        )


def encode_value(name: str, value: str) -> bytes:
    """The value as the UTF-8 bytes a runner's environment will hold; refuses, naming the
    secret and never quoting the value, what an environment variable cannot carry."""
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise SecretError(f"the value of {name} is not valid Unicode text") from None
    if not data:
        raise SecretError(
            f"the value of {name} is empty; give a value, or remove the secret with "
            f"`tidal secrets unset {name}`"
        )
    if b"\x00" in data:
        raise SecretError(
            f"the value of {name} contains a NUL byte, which an environment variable cannot "
            "hold; encode binary data (e.g. base64) first"
        )
    if len(data) > MAX_VALUE_BYTES:
        raise SecretError(
            f"the value of {name} is {len(data)} bytes, above the {MAX_VALUE_BYTES // 1024} KiB "
            "limit; keep large files in /data or the code bundle, and the secret to unlock them"
        )
    return data


# -- the key --------------------------------------------------------------------------


def default_key_file(data_dir: Path) -> Path:
    return data_dir / KEY_FILE_NAME


def key_id(key: bytes) -> str:
    """A short fingerprint of a key, stored beside each value: tells "another key" from
    "damaged data" when a value does not decrypt. Reveals nothing usable about the key."""
    return hashlib.sha256(b"tidal-secrets-key-id\x00" + key).hexdigest()[:16]


def create_key_file(path: Path) -> None:
    """Write a new random key, owner-only from the first byte (O_EXCL: never overwrites)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key_file(path: Path) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SecretsKeyError(
            f"the secrets key file {path} does not exist; restore it, or create a new key "
            f"(only if no secrets were stored with another one) with: "
            f"python -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"
            f" > {path} && chmod 600 {path}"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise SecretsKeyError(f"the secrets key file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise SecretsKeyError(
            f"the secrets key file {path} is accessible to group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); refusing to use it. Make it private "
            f"with `chmod 600 {path}`, and replace the key if others may have read it"
        )
    try:
        key = base64.urlsafe_b64decode(path.read_bytes().strip())
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise SecretsKeyError(
            f"the secrets key file {path} does not hold a tidal secrets key "
            "(32 random bytes, URL-safe base64, on one line)"
        )
    return key


# -- the store ------------------------------------------------------------------------


class SecretStore:
    """Per-owner secrets in the platform's database, sealed with the key in `key_file`."""

    def __init__(self, engine: Engine, key_file: Path, create_key: bool = True) -> None:
        """Opens the key (creating a new one when `create_key` and none exists yet).
        Raises SecretsKeyError for a key file that is unsafe or malformed."""
        self._engine = engine
        self.key_file = key_file
        if create_key and not key_file.exists():
            try:
                create_key_file(key_file)
                log.info("created the secrets key %s", key_file)
            except FileExistsError:
                pass  # another process made it first: use that one
        key = read_key_file(key_file)
        self._aead = AESGCM(key)
        self.key_id = key_id(key)
        unreadable = self.unreadable()
        if unreadable:
            log.error(
                "%d secret(s) were sealed with a different key than %s and cannot be given "
                "to runners: %s. Restore the key file that sealed them, or set them again.",
                len(unreadable),
                key_file,
                ", ".join(f"{owner}/{name}" for owner, name in unreadable),
            )

    @classmethod
    def for_platform(cls, engine: Engine, config: Any) -> SecretStore:
        """The store a platform uses: its `secrets_key_file` setting when given (which must
        exist), else `<data_dir>/secrets.key` (created on first start)."""
        configured: Path | None = getattr(config, "secrets_key_file", None)
        if configured is not None:
            return cls(engine, Path(configured).expanduser(), create_key=False)
        return cls(engine, default_key_file(Path(config.data_dir)))

    def __repr__(self) -> str:
        return f"SecretStore(key_file={str(self.key_file)!r}, key_id={self.key_id!r})"

    # -- sealing ---------------------------------------------------------------------
    @staticmethod
    def _aad(owner: str, name: str) -> bytes:
        return b"tidal-secret\x00" + owner.encode() + b"\x00" + name.encode()

    def _seal(self, owner: str, name: str, data: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _FORMAT + nonce + self._aead.encrypt(nonce, data, self._aad(owner, name))

    def _open(self, row: SecretRow) -> str:
        blob = row.ciphertext
        if row.key_id != self.key_id:
            raise SecretsKeyError(
                f"secret {row.name} (owner {row.owner}) was sealed with another key "
                f"(id {row.key_id}) than the one in {self.key_file} (id {self.key_id}): the key "
                f"file was replaced or the configuration names another one. Restore the key "
                f"file that sealed it, or set the secret again (`tidal secrets set {row.name}=...`)"
                f" or remove it (`tidal secrets unset {row.name}`)"
            )
        try:
            if blob[:1] != _FORMAT:
                raise InvalidTag
            nonce, sealed = blob[1 : 1 + _NONCE], blob[1 + _NONCE :]
            return self._aead.decrypt(nonce, sealed, self._aad(row.owner, row.name)).decode()
        except (InvalidTag, UnicodeDecodeError):
            raise SecretsKeyError(
                f"secret {row.name} (owner {row.owner}) does not decrypt with the key in "
                f"{self.key_file}: its stored value is damaged or was altered. Set it again "
                f"(`tidal secrets set {row.name}=...`)"
            ) from None

    # -- what the API and the controller call ------------------------------------------
    def set(self, owner: str, name: str, value: str) -> SecretInfo:
        """Create or replace a secret. New runners see it; running ones keep what they had."""
        check_name(name)
        data = encode_value(name, value)
        now = time.time()
        with Session(self._engine) as s, s.begin():
            rows = s.scalars(select(SecretRow).where(SecretRow.owner == owner)).all()
            others = sum(_plain_size(r.ciphertext) for r in rows if r.name != name)
            if others + len(name) + len(data) > MAX_TOTAL_BYTES:
                raise SecretError(
                    f"setting {name} would bring this owner's secrets to more than "
                    f"{MAX_TOTAL_BYTES // 1024} KiB, more than a runner's environment can "
                    "safely hold; remove secrets no longer used (`tidal secrets unset NAME`)"
                )
            row = next((r for r in rows if r.name == name), None)
            sealed = self._seal(owner, name, data)
            if row is None:
                row = SecretRow(owner=owner, name=name, created_at=now)
                s.add(row)
            row.ciphertext, row.key_id, row.updated_at = sealed, self.key_id, now
            s.flush()
            return SecretInfo(row.name, row.created_at, row.updated_at)

    def unset(self, owner: str, name: str) -> None:
        with Session(self._engine) as s, s.begin():
            done = s.execute(
                delete(SecretRow).where(SecretRow.owner == owner, SecretRow.name == name)
            )
            if not getattr(done, "rowcount", 0):
                raise SecretNotFound(
                    f"no secret named {name!r}; see the names with `tidal secrets list`"
                )

    def list_for(self, owner: str) -> list[SecretInfo]:
        """Names and times only: listing decrypts nothing."""
        with Session(self._engine) as s:
            rows = s.scalars(
                select(SecretRow).where(SecretRow.owner == owner).order_by(SecretRow.name)
            ).all()
            return [SecretInfo(r.name, r.created_at, r.updated_at) for r in rows]

    def env_for(self, owner: str) -> SecretEnv:
        """Every secret of `owner`, decrypted, for a runner's environment. Raises
        SecretsKeyError (naming the key file and the secrets) if any does not decrypt:
        a runner must not start with a secret silently missing or wrong."""
        with Session(self._engine) as s:
            rows = s.scalars(
                select(SecretRow).where(SecretRow.owner == owner).order_by(SecretRow.name)
            ).all()
            env = SecretEnv()
            problems: list[SecretsKeyError] = []
            for row in rows:
                try:
                    env[row.name] = self._open(row)
                except SecretsKeyError as exc:
                    problems.append(exc)
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise SecretsKeyError(
                f"{len(problems)} secrets do not decrypt with the key in {self.key_file}; "
                + "; ".join(str(p) for p in problems)
            )
        return env

    def unreadable(self) -> list[tuple[str, str]]:
        """(owner, name) of each secret the current key cannot open."""
        out = []
        with Session(self._engine) as s:
            for row in s.scalars(select(SecretRow).order_by(SecretRow.owner, SecretRow.name)):
                try:
                    self._open(row)
                except SecretsKeyError:
                    out.append((row.owner, row.name))
        return out


def _plain_size(blob: bytes) -> int:
    return max(0, len(blob) - len(_FORMAT) - _NONCE - _TAG)
