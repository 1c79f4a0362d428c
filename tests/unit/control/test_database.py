"""Opening the platform's database: migrations on SQLite and PostgreSQL, platforms
starting at once, and the error when the database cannot be reached."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, text

from tidal.control.db import MIGRATIONS, DatabaseError, open_database
from tidal.testing_postgres import PostgresServer


def versions(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT version FROM schema_version")).scalars())


def test_platforms_starting_at_once_migrate_once(postgres: PostgresServer) -> None:
    # PostgreSQL only: platforms never share a SQLite file.
    database_url = postgres.create_database()
    engines: list[Engine] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            engines.append(open_database(database_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        assert versions(engines[0]) == list(range(1, len(MIGRATIONS) + 1))
    finally:
        for e in engines:
            e.dispose()
        postgres.drop_database(database_url)


def test_an_unreachable_database_says_where_and_what_to_do(postgres: PostgresServer) -> None:
    url = f"postgresql://tidal:hunter2@127.0.0.1:{postgres.port}/no_such_database"
    with pytest.raises(DatabaseError) as caught:
        open_database(url)
    message = str(caught.value)
    assert "hunter2" not in message
    assert f"postgresql://tidal:***@127.0.0.1:{postgres.port}/no_such_database" in message
    assert "does not exist" in message and "createdb" in message


def test_other_kinds_of_database_are_refused_clearly() -> None:
    with pytest.raises(DatabaseError, match="postgresql://USER:PASSWORD@HOST"):
        open_database("mysql://root:pw@127.0.0.1/tidal")
