"""A runner's environment variables: built from an allowlist, never the platform's own
(which may hold credentials, the database URL, or the key file's path)."""

from __future__ import annotations

from collections.abc import Mapping

# Taken from the platform's environment when set there: harmless and expected by programs.
PASSED_THROUGH = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")


def runner_environment(
    platform_env: Mapping[str, str], runner_vars: Mapping[str, str], home: str
) -> dict[str, str]:
    """`runner_vars` are what the platform means the runner to have (the app's secrets,
    tidal's runner variables, PATH, CUDA_VISIBLE_DEVICES, the environment's variables)."""
    env = {name: platform_env[name] for name in PASSED_THROUGH if name in platform_env}
    env["PATH"] = platform_env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = home
    env.update(runner_vars)
    env["PYTHONUNBUFFERED"] = "1"
    return env
