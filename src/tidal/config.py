"""The platform's settings (`tidal server` flags map onto these)."""

from __future__ import annotations

import secrets
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
LOCAL_OWNER = "local"  # the owner of every app on an embedded platform (no keys yet)


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "tidal"


@dataclass
class PlatformConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # Used where an app leaves the option unset (None).
    default_max_concurrency: int = 10
    default_startup_timeout: int = 600
    default_request_timeout: int = 3600
    max_waiting_per_app: int = 1000
    stop_grace_seconds: float = 10.0
    bundle_limit_bytes: int = 50 * 1024 * 1024
    # The largest file `tidal files upload` may write into /data.
    data_upload_limit_bytes: int = 10 * 1024**3
    # A bundle that would unpack to more than this is refused before anything is extracted.
    bundle_unpacked_limit_bytes: int = 500 * 1024 * 1024
    # What a caller may send (tidal.gateway.intake): the request head's size (431 above
    # it) and time to arrive (408), and how long a body may stop arriving before the
    # connection is closed (the request then counts as abandoned, 499).
    header_limit_bytes: int = 64 * 1024
    header_timeout_seconds: float = 10.0
    body_idle_timeout_seconds: float = 30.0
    # A queued request's body above this is refused (413) instead of stored.
    queue_body_limit_bytes: int = 32 * 1024 * 1024
    # Webhooks go to public addresses only; these hosts (names, addresses or CIDR
    # networks, e.g. "127.0.0.1" or "10.0.0.0/8") may be loopback or private too.
    webhook_allowed_hosts: list[str] = field(default_factory=list)
    tick_seconds: float = 0.5
    # How often an App's health check endpoint is called (fal: about every 15 s).
    health_check_interval_seconds: float = 15.0
    ended_runners_kept: int = 20
    # When a runner waits for room on this host, idle runners of other apps (above their
    # min_concurrency) yield it, longest idle first, but only once idle this long.
    yield_idle_floor_seconds: float = 5.0
    # The key that seals secrets (default: DATA_DIR/secrets.key, created 0600 on first start).
    secrets_key_file: Path | None = None
    # How long the queue keeps a completed request's result.
    queue_result_ttl_seconds: float = 7 * 24 * 3600
    # ... and at most this many of an app's finished results (the oldest go first).
    queue_results_per_app: int = 10_000
    # How long the request records behind the dashboard's analytics and errors are kept.
    records_retention_seconds: float = 7 * 24 * 3600
    # Serve /metrics without an API key (otherwise it needs an admin key, like /api/).
    metrics_open: bool = False
    # Environments no app uses are removed after this long unused.
    environment_ttl_seconds: float = 7 * 24 * 3600
    # Give each exposed_port runner a private network namespace where the host allows.
    isolate_network: bool = True
    # Run every local runner in its app's sandbox (tidal.sandbox); False is `--sandbox off`:
    # runners then run unconfined, with the platform's rights (trusted code only).
    sandbox: bool = True
    # The uids (and gids) given to apps' sandboxes, first and last; each app gets its own.
    sandbox_uid_range: list[int] = field(default_factory=lambda: [700_000, 765_535])
    # Processes and threads one runner may have at once (against fork bombs).
    sandbox_pids_max: int = 1024
    # A starting runner's CPU quota until it first answers (imports are most of a cold
    # start); then its machine type's share. 0: the machine type's share from the start.
    sandbox_startup_cpus: float = 2.0
    # Addresses of the veth pairs of runners with egress="internet" (a /30 each).
    sandbox_egress_subnet: str = "100.72.0.0/16"
    # Start runners from runner templates (tidal.templates) where the backend can; an
    # app turns them off for itself with `runner_templates=False`.
    runner_templates: bool = True
    # The region label of this host's runners (apps' `regions` must include it).
    region: str = "local"
    # The control plane's database: None is SQLite at DATA_DIR/tidal.db; a
    # `postgresql://USER:PASSWORD@HOST/DB` URL lets several platforms share it.
    database_url: str | None = None
    # With a shared database: how often this platform picks up apps that another one
    # deployed, scaled or deleted.
    registry_poll_seconds: float = 2.0
    # ... and be told at once by PostgreSQL's LISTEN/NOTIFY (off behind a PgBouncer in
    # transaction mode, which cannot LISTEN: then the poll alone does it).
    registry_listen: bool = True
    # Backends that run runners; None: local, plus docker when an engine answers.
    backends: list[str] | None = None
    # Machine type -> backend, for types only one backend offers (e.g. GPU-H100 = "ray").
    machine_backends: dict[str, str] = field(default_factory=dict)
    # The ray backend (tidal.backends.ray): the cluster's address (None: RAY_ADDRESS, else
    # the cluster `ray start` runs on this machine), the address runners bind and report
    # (None: their node's IP), and where each node keeps bundles, environments and logs.
    ray_address: str | None = None
    ray_runner_host: str | None = None
    ray_node_dir: str | None = None
    # The `[host]` and `[machine_types.*]` tables (see tidal.machines).
    machines: dict[str, Any] = field(default_factory=dict)
    # Serve https with this certificate (PEM, leaf first, then intermediates) and key.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_certfile else "http"

    # API keys required (tidal.gateway.auth); `tidal server --no-auth` turns them off.
    auth: bool = True

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def platform_id(data_dir: Path) -> str:
    """This platform's stable name (kept in DATA_DIR/platform.id): what it writes as the
    holder of the queued requests it runs, so a restart finds its own."""
    path = data_dir / "platform.id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        name = f"{socket.gethostname()[:40]}-{secrets.token_hex(6)}"
        path.write_text(name + "\n")
        return name


class ConfigError(ValueError):
    pass


def load_config(path: Path, **overrides: Any) -> PlatformConfig:
    """Read the platform's TOML file; `overrides` (from command-line flags) win."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the configuration {path}: {exc}") from None
    known = {f.name for f in fields(PlatformConfig)} - {"machines", "data_dir", "host", "port"}
    machines = {k: raw.pop(k) for k in ("host", "machine_types") if k in raw}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting {unknown[0]!r}; known: "
            f"{', '.join(sorted(known | {'host', 'machine_types'}))}"
        )
    for key in ("tls_certfile", "tls_keyfile", "secrets_key_file"):
        if isinstance(raw.get(key), str):  # relative to the TOML file's folder
            raw[key] = path.parent / Path(raw[key]).expanduser()
    return PlatformConfig(**{**raw, "machines": machines, **overrides})
