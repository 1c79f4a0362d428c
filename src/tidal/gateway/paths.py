"""The app's root: `/{owner}/{app}` is a folder, so a page served there with relative
links (`./assets/x.js`) needs the trailing slash; GET and HEAD are sent there with a 308
(method and body kept, query kept). Other methods go on unchanged: fal's clients POST to
`/{owner}/{app}` itself."""

from __future__ import annotations

from typing import Any

REDIRECTED = frozenset({"GET", "HEAD"})


def wants_slash(scope: dict[str, Any], parts: list[str]) -> bool:
    """Whether the request names the app's root without its trailing slash."""
    return len(parts) == 3 and scope["method"] in REDIRECTED


async def redirect_to_slash(scope: dict[str, Any], send: Any) -> None:
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    location = raw_path + b"/" + (b"?" + query if query else b"")
    await send({"type": "http.response.start", "status": 308, "headers": [
        (b"location", location), (b"content-length", b"0"), (b"cache-control", b"no-store")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b""})
