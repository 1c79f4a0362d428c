"""The 'existing server' the App wraps: a tiny image generator over HTTP (stdlib only).

`POST /api/generate` with `{"prompt": ...}` writes an 8x8 PNG of one colour (chosen
by the prompt) into the output directory and answers `{"path": ...}`;
`GET /health` answers once it listens.

    python image_server.py --port 8188 --output-dir /tmp/images
"""

import argparse
import hashlib
import json
import struct
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SIZE = 8


def colour_for(prompt: str) -> tuple[int, int, int]:
    """The same prompt always gives the same colour."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return digest[0], digest[1], digest[2]


def solid_png(rgb: tuple[int, int, int], width: int = SIZE, height: int = SIZE) -> bytes:
    """A valid PNG of one colour: 8-bit RGB, no interlacing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))  # filter 0 per row
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


class Handler(BaseHTTPRequestHandler):
    output_dir = Path(".")

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(200, {"status": "ok"})
        else:
            self._reply(404, {"detail": "not found"})

    def do_POST(self) -> None:
        if self.path != "/api/generate":
            self._reply(404, {"detail": "not found"})
            return
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            self._reply(400, {"detail": "give a prompt"})
            return
        path = self.output_dir / f"{uuid.uuid4().hex[:12]}.png"
        path.write_bytes(solid_png(colour_for(prompt)))
        self._reply(200, {"path": str(path)})

    def _reply(self, status: int, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs"))
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    Handler.output_dir = args.output_dir
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
