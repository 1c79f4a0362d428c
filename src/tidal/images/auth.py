"""Registry credentials from a platform secret (`from_registry(ref, auth="NAME")`).

The secret NAME holds one of:
- `{"username": "...", "password": "..."}` (Docker Hub with an access token as the
  password; GAR with username `_json_key` and the key file's JSON as the password,
  or `oauth2accesstoken` and an access token; ECR with username `AWS` and the output
  of `aws ecr get-login-password`),
- `{"token": "..."}`: a registry identity token,
- `username:password` as plain text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


class RegistryAuthError(ValueError):
    pass


def registry_of(ref: str) -> str:
    """The registry host of an image reference (Docker Hub when it names none)."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def auth_config(ref: str, secret_name: str, secrets: Mapping[str, str]) -> dict[str, str]:
    """The docker SDK's `auth_config` for pulling `ref`, from the named secret."""
    value = secrets.get(secret_name)
    if value is None:
        raise RegistryAuthError(
            f"from_registry({ref!r}, auth={secret_name!r}): there is no secret named "
            f"{secret_name!r}; create it with `tidal secrets set {secret_name} "
            '\'{"username": "...", "password": "..."}\'`'
        )
    config: dict[str, str] = {"serveraddress": registry_of(ref)}
    parsed: object = None
    if value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
    if isinstance(parsed, dict):
        if isinstance(parsed.get("token"), str):
            return {**config, "identitytoken": parsed["token"]}
        if isinstance(parsed.get("username"), str) and isinstance(parsed.get("password"), str):
            return {**config, "username": parsed["username"], "password": parsed["password"]}
    elif ":" in value:
        username, _, password = value.partition(":")
        return {**config, "username": username, "password": password}
    raise RegistryAuthError(
        f"secret {secret_name!r} is not registry credentials: give it "
        '`{"username": "...", "password": "..."}`, `{"token": "..."}` or `username:password`'
    )
