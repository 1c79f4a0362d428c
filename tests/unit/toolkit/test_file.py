"""tidal.toolkit.File and Image: what they serialize as, where they save, how they read.

No network: saving writes into a temporary store named by TIDAL_FILES_DIR, and the
request is a real starlette Request built from an ASGI scope.
"""

from __future__ import annotations

import base64
import importlib.util
import struct
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from tidal.storage.files import valid_file_name
from tidal.toolkit import File, FileStoreError, Image
from tidal.toolkit.file import parse_data_uri, sanitize_file_name
from tidal.toolkit.image import image_size
from tidal.toolkit.stores import IN_MEMORY_LIMIT, FileData, FileRepository

HAS_PILLOW = importlib.util.find_spec("PIL") is not None


def png_bytes(width: int, height: int) -> bytes:
    """A valid RGB PNG, built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + b"\x7f" * (width * 3) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes(width: int, height: int, sof: int = 0xC0, fill: bool = False) -> bytes:
    """SOI, a JFIF APP0 segment, a DQT-sized comment, then a start-of-frame header."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    comment = b"x" * 64
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return (
        b"\xff\xd8"
        + b"\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0
        + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
        + (b"\xff" * 3 if fill else b"")
        + b"\xff" + bytes([sof]) + struct.pack(">H", len(frame) + 2) + frame
        + b"\xff\xd9"
    )  # fmt: skip


def make_request(headers: dict[str, str], scheme: str = "http", server: Any = None) -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "scheme": scheme,
            "path": "/",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "server": server,
        }
    )


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "files"
    monkeypatch.setenv("TIDAL_FILES_DIR", str(directory))
    monkeypatch.setenv("TIDAL_PUBLIC_URL", "http://platform.test:8787/")
    return directory


def stored_path(store: Path, url: str) -> Path:
    file_id, _name = url.split("/files/", 1)[1].split("/")
    files = list((store / file_id).iterdir())
    assert len(files) == 1, files  # no temporary file left beside it
    return files[0]


# -- serialization ---------------------------------------------------------------


def test_file_serializes_as_fal_does(store: Path) -> None:
    file = File.from_bytes(b"hello", file_name="hello.txt")
    dumped = file.model_dump()
    assert list(dumped) == ["url", "content_type", "file_name", "file_size"]
    assert dumped["content_type"] == "text/plain"
    assert dumped["file_name"] == "hello.txt"
    assert dumped["file_size"] == 5
    assert dumped["url"].startswith("http://platform.test:8787/files/")
    assert File.model_validate(dumped) == file
    assert File.model_validate_json(file.model_dump_json()) == file


def test_image_adds_width_and_height(store: Path) -> None:
    image = Image.from_bytes(png_bytes(3, 5))
    assert list(image.model_dump()) == [
        "url", "content_type", "file_name", "file_size", "width", "height",
    ]  # fmt: skip
    assert (image.width, image.height) == (3, 5)
    assert image.content_type == "image/png"
    assert image.file_name == "file.png"
    assert isinstance(image, File)


def test_fields_of_a_users_response_model(store: Path) -> None:
    class Output(BaseModel):
        image: Image
        files: list[File]
        maybe: File | None = None

    out = Output(
        image=Image.from_bytes(png_bytes(2, 2)), files=[File.from_bytes(b"{}", "application/json")]
    )
    data = out.model_dump(mode="json")
    assert data["image"]["width"] == 2
    assert data["files"][0]["content_type"] == "application/json"
    assert data["files"][0]["file_name"] == "file.json"
    assert data["maybe"] is None
    assert Output.model_validate(data) == out
    # As an input the schema also admits a URL string; as an output it is the object.
    assert "anyOf" in Output.model_json_schema()["$defs"]["File"]
    assert Output.model_json_schema(mode="serialization")["$defs"]["File"]["type"] == "object"


def test_saved_bytes_land_in_the_store(store: Path) -> None:
    data = bytes(range(256)) * 10
    file = File.from_bytes(data, file_name="blob.bin")
    path = stored_path(store, file.url)
    assert path.read_bytes() == data
    assert path.name == "blob.bin"
    assert file.read_bytes() == data


def test_from_path_copies_and_guesses_the_type(store: Path, tmp_path: Path) -> None:
    source = tmp_path / "report.json"
    source.write_text('{"ok": true}')
    file = File.from_path(source)
    assert file.content_type == "application/json"
    assert file.file_name == "report.json"
    assert file.file_size == source.stat().st_size
    source.write_text("changed")  # the store holds a copy
    assert stored_path(store, file.url).read_text() == '{"ok": true}'
    renamed = File.from_path(source, content_type="text/x-custom", file_name="other.dat")
    assert (renamed.content_type, renamed.file_name) == ("text/x-custom", "other.dat")
    with pytest.raises(FileNotFoundError):
        File.from_path(tmp_path / "missing.txt")


def test_content_type_from_magic_when_nothing_else_says(store: Path) -> None:
    assert File.from_bytes(b"\xff\xd8\xff\xe0rest").content_type == "image/jpeg"
    unknown = File.from_bytes(b"\x00\x01")
    assert (unknown.content_type, unknown.file_name) == ("application/octet-stream", "file.bin")
    assert Image.from_bytes(png_bytes(1, 1), "png").content_type == "image/png"  # fal's format arg


# -- names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("photo.png", "photo.png"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("/abs/path/x.txt", "x.txt"),
        (".hidden", "hidden"),
        ("...", "file"),
        ("..", "file"),
        ("", "file"),
        ("dir/", "file"),
        ("a\x00b\nc.txt", "abc.txt"),
        ("  spaced name.txt ", "spaced name.txt"),
        ("résumé 東京.pdf", "résumé 東京.pdf"),
    ],
)
def test_file_names_are_sanitized(given: str, expected: str) -> None:
    assert sanitize_file_name(given) == expected
    assert valid_file_name(sanitize_file_name(given))


def test_long_names_keep_their_extension() -> None:
    name = sanitize_file_name("é" * 300 + ".png")
    assert name.endswith(".png")
    assert len(name.encode()) <= 255
    assert valid_file_name(name)


def test_a_saved_name_is_sanitized_and_quoted_in_the_url(store: Path) -> None:
    file = File.from_bytes(b"x", file_name="../secret dir/a b?#.txt")
    assert file.file_name == "a b?#.txt"
    assert file.url.endswith("/" + quote("a b?#.txt", safe=""))
    assert stored_path(store, file.url).name == "a b?#.txt"


# -- URLs ------------------------------------------------------------------------


def test_url_from_forwarded_headers(store: Path) -> None:
    request = make_request(
        {
            "host": "127.0.0.1:8000",
            "x-forwarded-proto": "https",
            "x-forwarded-host": "api.example.com",
        }
    )
    file = File.from_bytes(b"x", file_name="x.txt", request=request)
    assert file.url.startswith("https://api.example.com/files/")
    assert file.url.endswith("/x.txt")


def test_url_from_the_first_of_several_forwarded_values(store: Path) -> None:
    request = make_request(
        {
            "host": "inner:1",
            "x-forwarded-proto": "https, http",
            "x-forwarded-host": "a.test, b.test",
        }
    )
    assert File.from_bytes(b"x", request=request).url.startswith("https://a.test/files/")


def test_url_from_host_and_scheme_without_forwarded_headers(store: Path) -> None:
    request = make_request({"host": "tidal.local:8787"})
    assert File.from_bytes(b"x", request=request).url.startswith("http://tidal.local:8787/files/")
    secure = make_request({"host": "tidal.local"}, scheme="https")
    assert File.from_bytes(b"x", request=secure).url.startswith("https://tidal.local/files/")
    # The gateway's proto with the caller's own Host (what a runner sees).
    proxied = make_request({"host": "[::1]:8787", "x-forwarded-proto": "http"})
    assert File.from_bytes(b"x", request=proxied).url.startswith("http://[::1]:8787/files/")


def test_url_ignores_forwarded_values_that_are_not_a_host_or_proto(store: Path) -> None:
    request = make_request(
        {
            "host": "good.test",
            "x-forwarded-host": "evil.test/path?",
            "x-forwarded-proto": "javascript",
        }
    )
    assert File.from_bytes(b"x", request=request).url.startswith("http://good.test/files/")


def test_url_without_a_request_uses_the_public_url(store: Path) -> None:
    assert File.from_bytes(b"x").url.startswith("http://platform.test:8787/files/")


def test_no_request_and_no_public_url_is_a_clear_error(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIDAL_PUBLIC_URL")
    with pytest.raises(FileStoreError, match="TIDAL_PUBLIC_URL"):
        File.from_bytes(b"x")
    assert not store.exists() or not any(store.iterdir())  # nothing left behind


def test_saving_in_a_runner_without_a_store_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TIDAL_FILES_DIR", raising=False)
    monkeypatch.setenv("TIDAL_RUNNER_ID", "r-1")
    monkeypatch.setenv("TIDAL_PUBLIC_URL", "http://platform.test")
    with pytest.raises(FileStoreError, match=r"inside a tidal runner.*TIDAL_FILES_DIR"):
        File.from_bytes(b"x")
    with pytest.raises(FileStoreError, match="inside a tidal runner"):
        Image.from_bytes(png_bytes(1, 1), request=make_request({"host": "h"}))


def test_outside_a_runner_a_saved_file_is_a_data_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fal apps save example files at import time, on the deploy machine."""
    monkeypatch.delenv("TIDAL_FILES_DIR", raising=False)
    monkeypatch.delenv("TIDAL_RUNNER_ID", raising=False)
    (tmp_path / "cat.png").write_bytes(png_bytes(3, 2))
    image = Image.from_path(tmp_path / "cat.png")
    assert image.url.startswith("data:image/png;base64,")
    assert (image.width, image.height, image.file_name) == (3, 2, "cat.png")
    assert Image.model_validate({"url": image.url}).read_bytes() == png_bytes(3, 2)
    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        out.truncate(IN_MEMORY_LIMIT + 1)
    with pytest.raises(FileStoreError, match=r"outside a tidal runner.*inside setup"):
        File.from_path(big)


def test_repositories_by_name_and_by_object(store: Path) -> None:
    """fal's `repository=`: hosted names are the platform's store, "in_memory" a data:
    URI, a FileRepository object is called; a failing one falls back (fal's rule)."""
    for name in ("fal", "fal_v2", "fal_v3", "cdn"):
        assert File.from_bytes(b"x", repository=name).url.startswith("http://platform.test:8787/")
    memory = File.from_bytes(b"hi", "text/plain", repository="in_memory")
    assert memory.url == "data:text/plain;base64,aGk=" and memory.read_bytes() == b"hi"

    class Recording(FileRepository):
        def __init__(self) -> None:
            self.saved: list[tuple[str, bytes, dict[str, object]]] = []

        def save(self, data: FileData, **options: object) -> str:
            self.saved.append((data.file_name, data.data, options))
            return f"https://mine.example/{data.file_name}"

    mine = Recording()
    file = File.from_bytes(b"abc", file_name="a.txt", repository=mine, save_kwargs={"k": 1})
    assert file.url == "https://mine.example/a.txt" and mine.saved == [("a.txt", b"abc", {"k": 1})]

    class Broken(FileRepository):
        def save(self, data: FileData, **options: object) -> str:
            raise OSError("bucket gone")

    fell_back = File.from_bytes(b"y", repository=Broken(), fallback_repository="in_memory")
    assert fell_back.url.startswith("data:")
    with pytest.raises(OSError, match="bucket gone"):
        File.from_bytes(b"y", repository=Broken(), fallback_repository=None)
    with pytest.raises(ValueError, match="'s3' is not a file repository"):
        File.from_bytes(b"y", repository="s3")


# -- inputs ----------------------------------------------------------------------


class Input(BaseModel):
    file: File
    image: Image | None = None


def test_an_http_url_string_is_a_file() -> None:
    got = Input.model_validate({"file": "https://cdn.example.com/a/cat%20photo.jpg?sig=1"})
    assert got.file.url == "https://cdn.example.com/a/cat%20photo.jpg?sig=1"
    assert got.file.file_name == "cat photo.jpg"
    assert got.file.content_type == "image/jpeg"
    assert got.file.file_size is None
    bare = File.model_validate("http://example.com")
    assert (bare.url, bare.file_name) == ("http://example.com", None)


def test_a_base64_data_uri_keeps_its_type_and_size() -> None:
    data = png_bytes(4, 7)
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    got = Input.model_validate({"file": uri, "image": uri})
    assert got.file.url == uri
    assert (got.file.content_type, got.file.file_size) == ("image/png", len(data))
    assert got.file.read_bytes() == data
    assert got.image is not None
    assert (got.image.width, got.image.height) == (4, 7)
    assert got.model_dump()["file"]["url"] == uri


def test_a_percent_encoded_data_uri() -> None:
    file = File.model_validate("data:,hello%20world")
    assert (file.content_type, file.file_size) == ("text/plain", 11)
    assert file.read_bytes() == b"hello world"
    typed = File.model_validate("data:text/csv;charset=utf-8,a%2Cb")
    assert typed.content_type == "text/csv;charset=utf-8"
    assert typed.read_bytes() == b"a,b"


def test_data_uri_variants() -> None:
    assert parse_data_uri("data:;base64,aGk=") == ("text/plain", b"hi")
    assert parse_data_uri("data:application/octet-stream;base64,aGk") == (
        "application/octet-stream", b"hi",
    )  # fmt: skip
    assert parse_data_uri("data:x/y;base64,-_8=")[1] == b"\xfb\xff"  # url-safe alphabet
    assert parse_data_uri("data:x/y;base64,aG k=\n")[1] == b"hi"  # whitespace is ignored


@pytest.mark.parametrize(
    "bad",
    ["ftp://example.com/a.txt", "/etc/passwd", "file:///etc/passwd", "not a url", "http://",
     "data:image/png;base64,%%%", "data:image/png;base64"],
)  # fmt: skip
def test_other_strings_are_rejected(bad: str) -> None:
    with pytest.raises(ValidationError):
        Input.model_validate({"file": bad})


def test_an_object_input_is_taken_as_is() -> None:
    got = File.model_validate({"url": "https://x.test/f", "content_type": "a/b", "file_size": 3})
    assert (got.url, got.content_type, got.file_size, got.file_name) == (
        "https://x.test/f",
        "a/b",
        3,
        None,
    )


def test_download_a_data_uri(tmp_path: Path) -> None:
    file = File.model_validate("data:text/plain;base64," + base64.b64encode(b"abc").decode())
    assert file.download(tmp_path / "out" / "a.txt").read_bytes() == b"abc"
    named = File(url="data:,xyz", file_name="../n.txt")
    assert named.download(tmp_path) == tmp_path / "n.txt"
    assert (tmp_path / "n.txt").read_bytes() == b"xyz"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_url_of_this_store_is_read_from_disk(store: Path) -> None:
    saved = File.from_bytes(b"local bytes", file_name="l.txt")
    # Another host (the client's view, a proxy): the id says it is this store's file.
    given = File.model_validate(saved.url.replace("platform.test:8787", "unreachable.invalid"))
    assert given.read_bytes() == b"local bytes"


# -- image sizes -----------------------------------------------------------------


def test_png_size() -> None:
    assert image_size(png_bytes(17, 3)) == (17, 3)
    assert image_size(png_bytes(1, 1)) == (1, 1)


@pytest.mark.parametrize("sof", [0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCF])
def test_jpeg_size(sof: int) -> None:
    assert image_size(jpeg_bytes(640, 480, sof)) == (640, 480)


def test_jpeg_size_past_fill_bytes_and_large_segments() -> None:
    assert image_size(jpeg_bytes(3000, 2000, fill=True)) == (3000, 2000)
    exif = b"Exif\x00\x00" + b"\x00" * 60000
    data = b"\xff\xd8\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg_bytes(9, 8)[2:]
    assert image_size(data) == (9, 8)


def test_gif_size() -> None:
    assert image_size(b"GIF89a" + struct.pack("<HH", 300, 200) + b"\x00" * 10) == (300, 200)


@pytest.mark.skipif(HAS_PILLOW, reason="without Pillow, unknown formats have no size")
@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xd8", b"\xff\xd8\xff\xda\x00\x02", jpeg_bytes(5, 5)[:40], b"\x89PNG\r\n\x1a\n",
     b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"plain text"],
)  # fmt: skip
def test_unknown_or_truncated_images_have_no_size(data: bytes) -> None:
    assert image_size(data) is None


def test_image_from_path_reads_the_size(store: Path, tmp_path: Path) -> None:
    source = tmp_path / "photo.jpg"
    source.write_bytes(jpeg_bytes(1920, 1080))
    image = Image.from_path(source)
    assert (image.width, image.height, image.content_type) == (1920, 1080, "image/jpeg")
    assert image.file_size == source.stat().st_size
    assert image_size(source) == (1920, 1080)
    with source.open("rb") as fp:
        assert image_size(fp) == (1920, 1080)


@pytest.mark.skipif(HAS_PILLOW, reason="Pillow is installed")
def test_from_pil_without_pillow_says_what_to_install(store: Path) -> None:
    with pytest.raises(ImportError, match="pip install pillow"):
        Image.from_pil(object())


def test_from_pil_with_pillow(store: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    image = Image.from_pil(pil.new("RGBA", (12, 34), (255, 0, 0, 128)))
    assert (image.width, image.height, image.content_type) == (12, 34, "image/png")
    assert image.file_name == "image.png"
    jpeg = Image.from_pil(pil.new("RGBA", (5, 6)), format="jpg")
    assert (jpeg.width, jpeg.height, jpeg.content_type) == (5, 6, "image/jpeg")
    webp = Image.from_bytes(_encode(pil.new("RGB", (7, 3)), "WEBP"))
    assert (webp.width, webp.height, webp.content_type) == (7, 3, "image/webp")


def _encode(image: Any, fmt: str) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()
