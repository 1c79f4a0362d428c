"""Pure parts of browser sessions and affinity keys: origins, links, cookies, keys."""

from __future__ import annotations

from typing import Any

import pytest

from tidal.gateway.affinity import COOKIE, MAX_KEY, affinity_key
from tidal.gateway.browser import _without_cookie, cross_site, link_in, without_link


def _scope(query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
           method: str = "GET") -> dict[str, Any]:  # fmt: skip
    return {"type": "http", "method": method, "path": "/local/app/x", "raw_path": b"/local/app/x",
            "query_string": query, "headers": headers or []}  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "crossed"),
    [
        ([], False),  # not a browser's cross-origin call
        ([(b"host", b"h:1"), (b"origin", b"http://h:1")], False),
        ([(b"host", b"h:1"), (b"origin", b"https://h:1")], False),
        ([(b"host", b"h:1"), (b"origin", b"http://evil:1")], True),
        ([(b"host", b"h:1"), (b"origin", b"null")], True),
        ([(b"sec-fetch-site", b"same-origin")], False),
        ([(b"sec-fetch-site", b"none")], False),  # typed in the address bar
        ([(b"sec-fetch-site", b"same-site")], True),  # a sibling subdomain is another app
        ([(b"sec-fetch-site", b"cross-site")], True),
    ],
)
def test_cross_site(headers: list[tuple[bytes, bytes]], crossed: bool) -> None:
    assert cross_site(headers) is crossed


def test_link_token_only_on_get_and_taken_out_of_the_next_url() -> None:
    scope = _scope(b"a=1&tidal_link=tok&b=%20x")
    assert link_in(scope) == "tok"
    assert without_link(scope) == b"/local/app/x?a=1&b=+x"
    assert link_in(_scope(b"tidal_link=tok", method="POST")) is None
    assert without_link(_scope(b"tidal_link=tok")) == b"/local/app/x"


def test_session_cookie_removed_others_kept() -> None:
    headers = [(b"cookie", b"a=1; tidal_app=secret; b=2"), (b"x", b"y")]
    assert _without_cookie(headers, "tidal_app") == [(b"cookie", b"a=1; b=2"), (b"x", b"y")]
    assert _without_cookie([(b"cookie", b"tidal_app=s")], "tidal_app") == []


def test_affinity_keys_from_each_source() -> None:
    prefix = "/local/app"
    assert affinity_key(_scope(), None, prefix) == (None, None)
    by_header = _scope(headers=[(b"x-client", b" c1 ")])
    assert affinity_key(by_header, "header:X-Client", prefix) == ("c1", None)
    assert affinity_key(_scope(b"clientId=abc"), "query:clientId", prefix) == ("abc", None)
    assert affinity_key(_scope(), "query:clientId", prefix) == (None, None)
    long = _scope(b"clientId=" + b"x" * 1000)
    key, _ = affinity_key(long, "query:clientId", prefix)
    assert key is not None and len(key) == MAX_KEY
    kept = _scope(headers=[(b"cookie", f"{COOKIE}=k1".encode())])
    assert affinity_key(kept, "cookie", prefix) == ("k1", None)
    minted, set_cookie = affinity_key(_scope(), "cookie", prefix)
    assert minted and set_cookie is not None
    assert set_cookie.decode() == f"{COOKIE}={minted}; Path=/local/app; HttpOnly; SameSite=Lax"
