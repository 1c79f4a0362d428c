"""The fal examples, written with `import fal`, deployed by the CLI on a real platform.

No real fal is installed: tidal's fal compatibility layer provides `import fal`
in the CLI (which imports the user's file before uploading it) and in the runner.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tidal.testing import PlatformProcess

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example_module(path: Path) -> ModuleType:
    """A plain module of an example (not its fal app), imported under a unique name."""
    spec = importlib.util.spec_from_file_location(f"example_{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fal_direct_server(platform: PlatformProcess) -> None:
    deployed = platform.cli("deploy", "app.py::run_server", cwd=EXAMPLES / "fal_direct_server")
    assert "/local/run-server" in deployed.stdout
    with platform.http() as http:
        resp = http.get("/local/run-server/")
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"hello": "world", "served_by": "a fal direct server"}
        resp = http.post("/local/run-server/greet", json={"name": "fal"})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"message": "hello, fal"}
    # Both direct-server examples listen on 8000: without private network namespaces
    # (not root) they could not run side by side.
    platform.cli("apps", "delete", "run-server")


def test_fal_proxy_app_returns_an_image_by_url(platform: PlatformProcess) -> None:
    platform.cli("deploy", "app.py::MyServerProxy", cwd=EXAMPLES / "fal_proxy_app")
    server = load_example_module(EXAMPLES / "fal_proxy_app" / "image_server.py")
    expected: bytes = server.solid_png(server.colour_for("a red square"))
    with platform.http() as http:
        resp = http.post("/local/my-server-proxy/generate", json={"prompt": "a red square"})
        assert resp.status_code == 200, resp.text
        image = resp.json()["image"]
        assert image["content_type"] == "image/png"
        assert (image["width"], image["height"]) == (8, 8)
        assert image["file_size"] == len(expected)
        assert image["file_name"].endswith(".png")
        assert image["url"].startswith(f"{platform.url}/files/"), image["url"]
        download = http.get(image["url"])
        assert download.status_code == 200, download.text
        assert download.content == expected
        assert download.headers["content-type"].startswith("image/png")
        # Input validation is the App's, as on fal.
        assert http.post("/local/my-server-proxy/generate", json={}).status_code == 422


def test_fal_metadata_openapi_is_served(platform: PlatformProcess) -> None:
    platform.cli("deploy", "app.py::sentiment", cwd=EXAMPLES / "fal_metadata")
    with platform.http() as http:
        resp = http.get("/api/v1/apps/sentiment/openapi.json")  # stored at deploy, no runner
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert doc["openapi"].startswith("3.1")
        assert doc["info"]["title"] == "sentiment"
        assert set(doc["paths"]) == {"/", "/predict"}
        assert doc["paths"]["/predict"]["post"]["operationId"] == "predict"
        assert doc["components"]["schemas"]["PredictInput"]["required"] == ["text"]
        # The server the document describes answers as described.
        resp = http.post("/local/sentiment/predict", json={"text": "what a great day"})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"label": "positive", "score": 1}
        assert http.get("/local/sentiment/").json() == {"name": "sentiment", "version": "1.0"}
    platform.cli("apps", "delete", "sentiment")
