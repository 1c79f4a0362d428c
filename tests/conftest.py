"""Fixtures shared by every tier: a real platform process on a free loopback port."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from tidal.control.db import open_database
from tidal.testing import PlatformProcess, start_platform
from tidal.testing_docker import DockerEngine, DockerUnavailable
from tidal.testing_docker import docker_engine as start_docker_engine
from tidal.testing_docker import podman_engine as start_podman_engine
from tidal.testing_postgres import PostgresServer, PostgresUnavailable, postgres_server

APPS = Path(__file__).parent / "e2e" / "apps"


# Test apps' runners are tiny; account them against a roomy host so that a module's
# many apps never wait for CPUs on a 2-core CI machine (placement has its own tests).
# Webhook receivers in tests listen on 127.0.0.1, which the platform refuses unless allowed.
ROOMY = (
    'health_check_interval_seconds = 0.5\nwebhook_allowed_hosts = ["127.0.0.1"]\n'
    "[host]\ncpus = 64\nmemory_mb = 131072\n"
)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    data_dir = tmp_path_factory.mktemp("platform")
    (data_dir / "tidal.toml").write_text(ROOMY)
    with start_platform(data_dir) as running:
        yield running


@pytest.fixture
def apps_dir() -> Path:
    return APPS


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """One real Docker engine for the session (Debian's dockerd, `make system-deps`), with
    the base image tidal-test/debian-python:bookworm built by debootstrap; stopped at the end."""
    try:
        with start_docker_engine() as engine:
            yield engine
    except DockerUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def podman_engine() -> Iterator[DockerEngine]:
    """Rootful Podman's Docker-compatible API (`podman system service`, Debian's podman
    and catatonit), with the same base image; stopped and its storage removed at the end."""
    try:
        with start_podman_engine() as engine:
            yield engine
    except DockerUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (Debian's binaries, `make system-deps`)."""
    try:
        with postgres_server() as server:
            yield server
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The control plane's database, once per kind: a fresh one for each test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tidal.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An open, migrated control-plane database of each kind."""
    engine = open_database(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def hold_statements(
    engine: Engine,
) -> Iterator[Callable[[str], contextlib.AbstractContextManager[threading.Event]]]:
    """`with hold_statements(thread_name) as held:` the thread of that name stops before
    each SQL statement it runs on `engine` until the block ends; `held` is set once it
    has stopped at one. What others see while a slow read is under way."""
    holding: dict[str, tuple[threading.Event, threading.Event]] = {}

    def stop(*_: Any) -> None:
        found = holding.get(threading.current_thread().name)
        if found is not None:
            held, release = found
            held.set()
            release.wait(30)

    @contextlib.contextmanager
    def hold(thread: str) -> Iterator[threading.Event]:
        held, release = threading.Event(), threading.Event()
        holding[thread] = (held, release)
        try:
            yield held
        finally:
            del holding[thread]
            release.set()

    # Listening for the whole test: removed while a held thread walks the listeners,
    # it would break that walk.
    event.listen(engine, "before_cursor_execute", stop)
    yield hold
    event.remove(engine, "before_cursor_execute", stop)
