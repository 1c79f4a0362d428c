"""fal's download helpers against a real HTTP server on 127.0.0.1: names, reuse,
`force`, size limits, failures that leave nothing behind, and runners starting together
that download a URL once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tidal.toolkit import DownloadError, download_file, download_model_weights
from tidal.toolkit.download import file_name_of, url_digest
from tidal.toolkit.paths import MODEL_WEIGHTS_SUBDIR

WEIGHTS = bytes(range(256)) * 4096  # 1 MiB


class Files(BaseHTTPRequestHandler):
    requests: dict[str, int] = {}
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        with self.lock:
            self.requests[path] = self.requests.get(path, 0) + 1
        if path == "/missing":
            self.send_error(404, "Not Found")
            return
        body = WEIGHTS
        self.send_response(200)
        if path == "/named":
            self.send_header("Content-Disposition", 'attachment; filename="../model.safetensors"')
        sent = body[: len(body) // 2] if path == "/short/w.bin" else body
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if path.startswith("/slow"):
                for i in range(0, len(sent), 65536):
                    self.wfile.write(sent[i : i + 65536])
                    threading.Event().wait(0.01)
            else:
                self.wfile.write(sent)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client had what it needed (the headers)


@pytest.fixture
def server() -> Iterator[str]:
    Files.requests = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TIDAL_DATA_DIR", str(tmp_path))
    return tmp_path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_a_file_lands_under_data_and_is_kept(server: str, data: Path) -> None:
    path = download_file(f"{server}/models/w.bin", "models")
    assert path == data / "models" / "w.bin" and path.read_bytes() == WEIGHTS
    inode = path.stat().st_ino
    again = download_file(f"{server}/models/w.bin", "models")
    assert again == path and again.stat().st_ino == inode  # same size: kept
    forced = download_file(f"{server}/models/w.bin", "models", force=True)
    assert forced.stat().st_ino != inode and forced.read_bytes() == WEIGHTS
    named = download_file(f"{server}/named", data / "abs")
    assert named == data / "abs" / "model.safetensors"  # the server's name, never a path
    assert leftovers(data / "models") == ["w.bin"]


def test_failures_name_the_url_and_leave_nothing(server: str, data: Path) -> None:
    with pytest.raises(DownloadError, match=r"/missing failed: the server answered HTTP 404"):
        download_file(f"{server}/missing", "x")
    with pytest.raises(DownloadError, match=r"1\.0 MB, over filesize_limit=0 MB"):
        download_file(f"{server}/big.bin", "x", filesize_limit=0)
    with pytest.raises(
        DownloadError, match=r"/short/w.bin failed: .*524288 bytes, expected 1048576"
    ):
        download_file(f"{server}/short/w.bin", "x")
    with pytest.raises(DownloadError, match=r"ConnectError"):
        download_file("http://127.0.0.1:9/w.bin", "x")
    assert leftovers(data / "x") == []


def test_model_weights_download_once_for_runners_starting_together(
    server: str, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{server}/slow/weights.safetensors?v=1"
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: download_model_weights(url), range(4)))
    folder = data / MODEL_WEIGHTS_SUBDIR / url_digest(url)
    assert set(paths) == {folder / "weights.safetensors"}
    assert paths[0].read_bytes() == WEIGHTS
    # One download (what the runner's log shows), not four.
    assert capsys.readouterr().out.count(f"downloading {url} to ") == 1
    before = Files.requests["/slow/weights.safetensors"]
    assert download_model_weights(url) == paths[0]
    assert Files.requests["/slow/weights.safetensors"] == before  # no request at all
    download_model_weights(url, force=True)
    assert capsys.readouterr().out.count(f"downloading {url} to ") == 1
    assert leftovers(folder) == ["weights.safetensors"]


def test_file_names() -> None:
    assert file_name_of("https://h/a/b/model.ckpt?x=1", {}) == "model.ckpt"
    assert file_name_of("https://h/a/my%20model.bin", {}) == "my model.bin"
    cd = {"content-disposition": "attachment; filename*=UTF-8''w%C3%A9ights.bin"}
    assert file_name_of("https://h/dl?id=3", cd) == "wéights.bin"
    assert file_name_of("https://h/", {}) == url_digest("https://h/")
    assert file_name_of("https://h/..", {}) == url_digest("https://h/..")
