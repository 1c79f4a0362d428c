"""What a template may be started with, which runners may claim it, and how many
of a revision's templates wait (pure)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from tidal.spec import MAX_TEMPLATES

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


# Waiting templates of one revision take at most this share of the host's memory
# that is available (what they use already counted as available).
MEMORY_SHARE = 0.5


def templates_asked(option: bool | int, max_runners: int) -> int:
    """How many templates an app's `runner_templates` asks to keep waiting: False none,
    True one, a count that many; never more than the runners it may have at once."""
    return max(0, min(int(option), max_runners, MAX_TEMPLATES))


def pool_size(asked: int, rss_kib: int, available_kib: int, waiting: int) -> int:
    """How many of a revision's templates should wait: what it asks, as far as
    MEMORY_SHARE of the host's available memory holds them. Until one has said what
    it costs (`rss_kib` 0), one; and one always, as without a pool."""
    if asked <= 0:
        return 0
    if rss_kib <= 0:
        return 1
    budget = (available_kib + waiting * rss_kib) * MEMORY_SHARE
    return max(1, min(asked, int(budget // rss_kib)))
