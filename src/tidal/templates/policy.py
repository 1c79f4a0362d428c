"""What a template may be started with, and which runners may claim it (pure)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

# Set per runner at claim time; a template is started without them. No GPU: the
# runner's GPUs are chosen when it is placed, and a template must not touch one.
PER_RUNNER = {
    "TIDAL_RUNNER_ID": "template",  # still "inside a runner" for the SDK (no re-validation)
    "TIDAL_REQUEST_LOG": "",
    "TIDAL_MACHINE_TYPE": "",
    "CUDA_VISIBLE_DEVICES": "",
}


def template_env(runner_env: Mapping[str, str]) -> dict[str, str]:
    """A runner's environment as its template runs: the same, less what is per runner."""
    return {**runner_env, **{k: v for k, v in PER_RUNNER.items() if k in runner_env}}


def template_key(command: Sequence[str], cwd: str, runner_env: Mapping[str, str]) -> str:
    """Runners with equal keys are interchangeable before `setup()`: same interpreter,
    bundle, entry and options, same environment (secrets included: a changed secret
    needs a new template, since the module may read it at import)."""
    material = json.dumps([list(command), cwd, sorted(template_env(runner_env).items())])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def sandboxed_template_key(
    command: Sequence[str], cwd: str, runner_env: Mapping[str, str], sandbox: object
) -> str:
    """As `template_key`, for a template started as a runner's sandbox: runners claim
    it only if their sandbox would be built the same (app uid, limits, egress, mounts)."""
    return template_key([*command, repr(sandbox)], cwd, runner_env)
