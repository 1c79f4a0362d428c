"""/api/v1/secrets over a real SQLite file, and `tidal secrets` against it over HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from typer.testing import CliRunner

from tidal.backends.local import free_port
from tidal.cli.client import CLIError
from tidal.cli.secrets import secrets_app
from tidal.control.db import open_database
from tidal.control.secrets import SecretStore
from tidal.control.secrets_api import secrets_router
from tidal.testing import wait_for

VALUE = "s3cr3t-integration-value"


class Served:
    def __init__(self, data_dir: Path, store: SecretStore, url: str) -> None:
        self.data_dir, self.store, self.url = data_dir, store, url

    def database_bytes(self) -> bytes:
        """The database as it lies on disk: the file and its write-ahead log."""
        return b"".join(p.read_bytes() for p in sorted(self.data_dir.glob("tidal.db*")))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    engine = open_database(tmp_path / "tidal.db")
    store = SecretStore(engine, tmp_path / "secrets.key")
    app = FastAPI()
    app.include_router(secrets_router(store, "local"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), what="the API server")
        assert server.started
        yield Served(tmp_path, store, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(30)
        engine.dispose()


@pytest.fixture
def api(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        yield client


def test_put_list_delete_never_return_the_value(served: Served, api: httpx.Client) -> None:
    replies = []
    resp = api.put("/api/v1/secrets/API_TOKEN", json={"value": VALUE})
    assert resp.status_code == 200
    assert resp.json().keys() == {"name", "created_at", "updated_at"}
    replies.append(resp)
    replies.append(api.put("/api/v1/secrets/OTHER", json={"value": "second"}))
    resp = api.get("/api/v1/secrets")
    assert [s["name"] for s in resp.json()] == ["API_TOKEN", "OTHER"]
    assert all(s.keys() == {"name", "created_at", "updated_at"} for s in resp.json())
    replies.append(resp)
    assert served.store.env_for("local") == {"API_TOKEN": VALUE, "OTHER": "second"}
    resp = api.delete("/api/v1/secrets/OTHER")
    assert resp.json() == {"deleted": "OTHER"}
    replies.append(resp)
    resp = api.delete("/api/v1/secrets/OTHER")
    assert resp.status_code == 404
    assert "no secret named 'OTHER'" in resp.json()["detail"]
    replies.append(resp)
    assert [s["name"] for s in api.get("/api/v1/secrets").json()] == ["API_TOKEN"]
    for reply in replies:
        assert VALUE not in reply.text


def test_the_database_file_never_holds_the_value_in_clear(
    served: Served, api: httpx.Client
) -> None:
    for _ in range(3):  # a few versions, so that old pages would show one too
        assert api.put("/api/v1/secrets/API_TOKEN", json={"value": VALUE}).status_code == 200
    on_disk = served.database_bytes()
    assert b"API_TOKEN" in on_disk  # the file read is the one written
    assert VALUE.encode() not in on_disk
    assert VALUE.encode() not in (served.data_dir / "secrets.key").read_bytes()


@pytest.mark.parametrize(
    ("name", "status", "fix"),
    [
        ("api_token", 422, "e.g. API_TOKEN"),
        ("1X", 422, "not starting with a digit"),
        ("TIDAL_URL", 422, "reserved for the platform"),
        ("A%20B", 422, "e.g. A_B"),
    ],
)
def test_bad_names_are_refused_with_the_fix(
    api: httpx.Client, name: str, status: int, fix: str
) -> None:
    resp = api.put(f"/api/v1/secrets/{name}", json={"value": VALUE})
    assert resp.status_code == status
    assert fix in resp.json()["detail"]
    assert VALUE not in resp.text
    assert api.get("/api/v1/secrets").json() == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"value": 12345}, 422),
        ({"value": ["s3cr3t"]}, 422),
        ({"value": "s3cr3t", "extra": 1}, 422),
        ({"val": "s3cr3t"}, 422),
        (["s3cr3t"], 422),
        ({"value": ""}, 422),
        ({"value": "s3cr3t\u0000"}, 422),
        ({"value": "s3cr3t" + "x" * 64 * 1024}, 422),
    ],
)
def test_bad_bodies_are_refused_without_echoing_them(
    api: httpx.Client, body: object, status: int
) -> None:
    resp = api.put("/api/v1/secrets/API_TOKEN", json=body)
    assert resp.status_code == status, resp.text
    assert "s3cr3t" not in resp.text and "12345" not in resp.text
    assert api.get("/api/v1/secrets").json() == []


def test_bodies_that_are_not_json_or_too_big(api: httpx.Client) -> None:
    resp = api.put("/api/v1/secrets/A", content=b"s3cr3t")
    assert resp.status_code == 400 and "s3cr3t" not in resp.text
    resp = api.put("/api/v1/secrets/A", content=b"x" * (1024 * 1024))
    assert resp.status_code == 413


def test_the_routes_are_documented(api: httpx.Client) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert set(paths["/api/v1/secrets/{name}"]) == {"put", "delete"}
    put = paths["/api/v1/secrets/{name}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["required"] == ["value"]
    assert set(paths["/api/v1/secrets"]) == {"get"}


# -- the CLI, as a client of these routes ----------------------------------------------


def cli(served: Served, *args: str, stdin: str | None = None) -> tuple[int, str, object]:
    result = CliRunner().invoke(
        secrets_app, list(args), env={"TIDAL_URL": served.url, "COLUMNS": "200"}, input=stdin
    )
    return result.exit_code, result.output, result.exception


def test_cli_set_list_unset(served: Served, tmp_path: Path) -> None:
    code, out, _ = cli(served, "set", f"API_TOKEN={VALUE}", "DSN=postgres://u:p@h/db?x=1")
    assert code == 0, out
    assert "API_TOKEN" in out and "DSN" in out and VALUE not in out
    assert served.store.env_for("local") == {"API_TOKEN": VALUE, "DSN": "postgres://u:p@h/db?x=1"}
    pem = "-----BEGIN KEY-----\nabc\n-----END KEY-----\n"
    (tmp_path / "key.pem").write_text(pem)
    code, out, _ = cli(served, "set", "PEM", "--from-file", str(tmp_path / "key.pem"))
    assert code == 0, out
    code, out, _ = cli(served, "set", "FROM_STDIN", "--from-file", "-", stdin="piped value")
    assert code == 0, out
    env = served.store.env_for("local")
    assert env["PEM"] == pem  # byte for byte, final newline kept
    assert env["FROM_STDIN"] == "piped value"
    code, out, _ = cli(served, "list")
    assert code == 0
    for name in ("API_TOKEN", "DSN", "PEM", "FROM_STDIN"):
        assert name in out
    assert VALUE not in out and "postgres" not in out
    code, out, _ = cli(served, "list", "--json")
    listed = json.loads(out)
    assert [s["name"] for s in listed] == ["API_TOKEN", "DSN", "FROM_STDIN", "PEM"]
    assert VALUE not in out
    code, out, _ = cli(served, "unset", "DSN")
    assert code == 0 and "DSN" in out
    assert "DSN" not in served.store.env_for("local")
    code, out, exc = cli(served, "unset", "DSN")
    assert isinstance(exc, CLIError) and "no secret named 'DSN'" in str(exc)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["API_TOKEN"], "has no value: write NAME=VALUE"),
        (["lower=x"], "e.g. LOWER"),
        (["TIDAL_X=x"], "reserved"),
        (["GOOD=s3cr3t", "bad-name=s3cr3t"], "e.g. BAD_NAME"),
        (["A=s3cr3t", "A=s3cr3t2"], "once per command"),
        (["EMPTY="], "is empty"),
        (["A=s3cr3t", "--from-file", "x"], "exactly one NAME"),
        (["A", "--from-file", "/nonexistent/file"], "cannot read the value of A"),
    ],
)
def test_cli_refuses_before_sending_anything(served: Served, args: list[str], message: str) -> None:
    code, _, exc = cli(served, "set", *args)
    assert code != 0
    assert isinstance(exc, CLIError), exc
    assert message in str(exc) and "s3cr3t" not in str(exc)
    assert served.store.list_for("local") == []  # the good one was not set either


def test_cli_refuses_a_binary_file(served: Served, tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"\xff\xfe\x00binary")
    _, _, exc = cli(served, "set", "BLOB", "--from-file", str(tmp_path / "blob"))
    assert isinstance(exc, CLIError) and "not UTF-8 text" in str(exc)


def test_cli_list_when_empty(served: Served) -> None:
    code, out, _ = cli(served, "list")
    assert code == 0 and "tidal secrets set NAME=VALUE" in out
