"""The file store over real HTTP: FileServer on uvicorn on a loopback port, httpx as client.

Files are saved the way a runner saves them (tidal.toolkit with TIDAL_FILES_DIR and
TIDAL_PUBLIC_URL), then fetched whole, by HEAD and by range. Traversal attempts go
out as raw request lines, since HTTP clients tidy `..` away before sending.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.requests import Request

from tidal.backends.local import free_port
from tidal.storage.files import FileServer, files_dir
from tidal.testing import wait_for
from tidal.toolkit import File, Image

SECRET = b"not for the web"
BIG = os.urandom(1024 * 1024 + 12345)  # several chunks, not a multiple of one


@dataclass
class Served:
    url: str
    store: Path
    port: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("data")
    (data_dir / "tidal.db").write_bytes(SECRET)  # what a traversal would be after
    store = files_dir(data_dir)
    port = free_port()
    config = uvicorn.Config(
        FileServer(store), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
        lifespan="on", log_level="warning", access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="file-server", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=30, what="uvicorn")
        assert server.started
        yield Served(f"http://127.0.0.1:{port}", store, port)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def runner_env(served: Served, monkeypatch: pytest.MonkeyPatch) -> Served:
    """The environment the platform gives a runner."""
    monkeypatch.setenv("TIDAL_FILES_DIR", str(served.store))
    monkeypatch.setenv("TIDAL_PUBLIC_URL", served.url)
    return served


@pytest.fixture
def client(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as http:
        yield http


def raw_get(port: int, target: str, method: str = "GET") -> tuple[int, bytes]:
    """Send one request line exactly as written; (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_get_returns_the_same_bytes(runner_env: Served, client: httpx.Client) -> None:
    file = File.from_bytes(BIG, file_name="big.bin")
    assert file.url.startswith(f"{runner_env.url}/files/")
    response = client.get(file.url)
    assert response.status_code == 200
    assert response.content == BIG
    assert response.headers["content-length"] == str(len(BIG))
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"]
    assert response.headers["last-modified"].endswith("GMT")
    assert response.headers["x-content-type-options"] == "nosniff"


def test_head_has_the_headers_and_no_body(runner_env: Served, client: httpx.Client) -> None:
    file = File.from_bytes(BIG, file_name="head.bin")
    response = client.head(file.url)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(BIG))
    assert response.headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=1000000-", 1000000, len(BIG) - 1),
        ("bytes=-500", len(BIG) - 500, len(BIG) - 1),
        ("bytes=5-99999999", 5, len(BIG) - 1),  # a last byte past the end is clamped
        ("bytes=-99999999", 0, len(BIG) - 1),
    ],
)
def test_range_206(
    runner_env: Served, client: httpx.Client, header: str, start: int, end: int
) -> None:
    file = File.from_bytes(BIG, file_name="range.bin")
    response = client.get(file.url, headers={"range": header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(BIG)}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.content == BIG[start : end + 1]


@pytest.mark.parametrize("header", [f"bytes={len(BIG)}-", "bytes=99999999-", "bytes=-0"])
def test_range_416(runner_env: Served, client: httpx.Client, header: str) -> None:
    file = File.from_bytes(BIG, file_name="range.bin")
    response = client.get(file.url, headers={"range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(BIG)}"
    assert response.json()["error_type"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=9-3", "bytes=x-"])
def test_ranges_it_does_not_serve_get_the_whole_file(
    runner_env: Served, client: httpx.Client, header: str
) -> None:
    file = File.from_bytes(b"0123456789", file_name="digits.txt")
    response = client.get(file.url, headers={"range": header})
    assert (response.status_code, response.content) == (200, b"0123456789")


def test_conditional_requests(runner_env: Served, client: httpx.Client) -> None:
    file = File.from_bytes(b"0123456789", file_name="cond.txt")
    etag = client.head(file.url).headers["etag"]
    assert client.get(file.url, headers={"if-none-match": etag}).status_code == 304
    partial = client.get(file.url, headers={"range": "bytes=2-3", "if-range": etag})
    assert (partial.status_code, partial.content) == (206, b"23")
    stale = client.get(file.url, headers={"range": "bytes=2-3", "if-range": '"other"'})
    assert (stale.status_code, stale.content) == (200, b"0123456789")


def test_an_empty_file(runner_env: Served, client: httpx.Client) -> None:
    file = File.from_bytes(b"", file_name="empty.txt")
    response = client.get(file.url)
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["content-length"] == "0"
    assert client.get(file.url, headers={"range": "bytes=0-"}).status_code == 416


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("a.png", "image/png"),
        ("a.jpg", "image/jpeg"),
        ("a.json", "application/json"),
        ("a.txt", "text/plain"),
        ("a.mp4", "video/mp4"),
        ("a.unknownext", "application/octet-stream"),
        ("noext", "application/octet-stream"),
    ],
)
def test_content_types(
    runner_env: Served, client: httpx.Client, name: str, content_type: str
) -> None:
    file = File.from_bytes(b"data", file_name=name)
    assert client.get(file.url).headers["content-type"] == content_type


def test_names_that_need_quoting(runner_env: Served, client: httpx.Client) -> None:
    file = File.from_bytes(b"quoted", file_name="résumé #1 (final)?.txt")
    response = client.get(file.url)
    assert (response.status_code, response.content) == (200, b"quoted")
    assert "filename*=UTF-8''" in response.headers["content-disposition"]


def test_an_image_round_trip(runner_env: Served, client: httpx.Client) -> None:
    ihdr = struct.pack(">IIBBBBB", 9, 4, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * 4
    image = Image.from_bytes(png, file_name="tiny.png")
    response = client.get(image.url)
    assert response.headers["content-type"] == "image/png"
    assert Image.from_bytes(response.content).width == 9


def test_an_input_url_is_fetched_over_http(
    runner_env: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = File.from_bytes(BIG, file_name="fetch.bin")
    monkeypatch.delenv("TIDAL_FILES_DIR")  # a caller elsewhere: no store on its disk
    given = File.model_validate(saved.url)
    assert given.file_name == "fetch.bin"
    assert given.read_bytes() == BIG
    assert given.download(tmp_path).read_bytes() == BIG
    assert (tmp_path / "fetch.bin").stat().st_size == len(BIG)


def test_a_request_behind_a_proxy_names_the_proxy(runner_env: Served) -> None:
    headers = {"host": "127.0.0.1:1", "x-forwarded-proto": "https",
               "x-forwarded-host": "files.example.com"}  # fmt: skip
    request = Request({"type": "http", "scheme": "http", "path": "/", "headers": [
        (k.encode(), v.encode()) for k, v in headers.items()]})  # fmt: skip
    file = File.from_bytes(b"x", file_name="p.txt", request=request)
    assert file.url.startswith("https://files.example.com/files/")


def test_not_found_is_json(runner_env: Served, client: httpx.Client) -> None:
    response = client.get(f"{runner_env.url}/files/{'0' * 32}/nothing.txt")
    assert response.status_code == 404
    assert response.json() == {"detail": "no such file", "error_type": "file_not_found"}
    assert client.head(f"{runner_env.url}/files/{'0' * 32}/nothing.txt").status_code == 404


def test_traversal_and_malformed_paths_are_404(runner_env: Served) -> None:
    saved = File.from_bytes(b"inside", file_name="ok.txt")
    file_id = saved.url.split("/files/")[1].split("/")[0]
    assert raw_get(runner_env.port, f"/files/{file_id}/ok.txt") == (200, b"inside")
    (runner_env.store / file_id / ".hidden").write_bytes(SECRET)
    (runner_env.store / file_id / "sub").mkdir()
    (runner_env.store / file_id / "link.txt").symlink_to(runner_env.store.parent / "tidal.db")
    link_id = "f" * 32
    (runner_env.store / link_id).symlink_to(runner_env.store / file_id)
    attempts = [
        "/files/../tidal.db",
        "/files/%2e%2e/tidal.db",
        "/files/%2E%2E/tidal.db",
        f"/files/{file_id}/../../tidal.db",
        f"/files/{file_id}/%2e%2e%2f%2e%2e%2ftidal.db",
        f"/files/{file_id}/..%2f..%2ftidal.db",
        f"/files/{file_id}/..",
        f"/files/{file_id}/.",
        f"/files/{file_id}/%00",
        f"/files/{file_id}/ok.txt%00",
        f"/files/{file_id}/ok.txt/",
        f"/files/{file_id}/ok.txt/extra",
        f"/files/{file_id}//ok.txt",
        f"/files/{file_id}/.hidden",
        f"/files/{file_id}/sub",
        f"/files/{file_id}/link.txt",
        f"/files/{file_id}/OK.TXT",
        f"/files/{file_id}/ok.tx",
        f"/files/{file_id}/%252e%252e%252ftidal.db",
        f"/files/{file_id}/",
        f"/files/{file_id}",
        f"/files/{link_id}/ok.txt",  # the id directory itself is a link
        f"/files/{file_id.upper()}/ok.txt",
        f"/files/{file_id[:-1]}/ok.txt",
        f"/files/{file_id}0/ok.txt",
        f"/files/{'g' * 32}/ok.txt",
        "/files/tidal.db",
        "/files/",
        "/tidal.db",
    ]
    for target in attempts:
        status, body = raw_get(runner_env.port, target)
        assert status == 404, target
        assert b"file_not_found" in body, target
        assert SECRET not in body and b"inside" not in body, target


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(runner_env: Served, client: httpx.Client, method: str) -> None:
    file = File.from_bytes(b"x", file_name="m.txt")
    response = client.request(method, file.url)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json()["error_type"] == "method_not_allowed"


def test_a_client_that_leaves_mid_download(runner_env: Served, client: httpx.Client) -> None:
    file = File.from_bytes(BIG * 4, file_name="leave.bin")
    with client.stream("GET", file.url) as response:
        first = next(response.iter_raw(1024))
        assert first == BIG[: len(first)]
    # The server is still well after the abandoned stream.
    assert client.get(file.url, headers={"range": "bytes=0-3"}).content == BIG[:4]
