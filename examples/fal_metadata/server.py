"""The existing server: a stdlib HTTP server with no OpenAPI of its own.

`POST /predict` with `{"text": ...}` answers `{"label": "positive"|"negative", "score": ...}`;
`GET /` says what it is.

    python server.py --port 8000
"""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POSITIVE = frozenset({"good", "great", "love", "happy", "nice", "excellent"})
NEGATIVE = frozenset({"bad", "awful", "hate", "sad", "terrible", "poor"})


def classify(text: str) -> dict[str, object]:
    words = [w.strip(".,!?").lower() for w in text.split()]
    score = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
    return {"label": "negative" if score < 0 else "positive", "score": score}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/":
            self._reply(200, {"name": "sentiment", "version": "1.0"})
        else:
            self._reply(404, {"detail": "not found"})

    def do_POST(self) -> None:
        if self.path != "/predict":
            self._reply(404, {"detail": "not found"})
            return
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        if not isinstance(body.get("text"), str):
            self._reply(422, {"detail": "'text' must be a string"})
            return
        self._reply(200, classify(body["text"]))

    def _reply(self, status: int, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    ThreadingHTTPServer(("0.0.0.0", args.port), Handler).serve_forever()
