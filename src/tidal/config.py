"""The platform's settings (`tidal server` flags map onto these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
    tick_seconds: float = 0.5
    ended_runners_kept: int = 20
    # Give each exposed_port runner a private network namespace where the host allows.
    isolate_network: bool = True

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
