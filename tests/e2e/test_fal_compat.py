"""fal code from the wild, unchanged: an app written as fal's documentation writes it
(`tests/e2e/apps/fal_docs/app.py`), deployed with `tidal deploy` through the `fal`
shim and called through the gateway: fal's exceptions answer as fal answers them,
the toolkit's folders, clones, files and image sizes work in a runner."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest

from tidal.testing import PlatformProcess, wait_for

pytestmark = pytest.mark.slow

FAL_DOCS = Path(__file__).parent / "apps" / "fal_docs"


@pytest.fixture(scope="module")
def fal_docs(platform: PlatformProcess) -> str:
    with warnings.catch_warnings():
        deployed = platform.cli("deploy", "app.py::app", "--app-name", "fal-docs", cwd=FAL_DOCS)
    # fal's scheduler options are accepted with a warning, not a failure.
    assert "tidal ignores _scheduler" in deployed.stdout + deployed.stderr
    return "/local/fal-docs"


def test_field_and_app_exceptions_answer_as_fal_does(
    platform: PlatformProcess, fal_docs: str
) -> None:
    with platform.http() as http:
        ok = http.post(fal_docs, json={"prompt": "a cat", "image_size": "landscape_16_9"})
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert (body["width"], body["height"], body["prompt"]) == (1024, 576, "a cat")
        assert body["has_nsfw_concepts"] == []
        sized = http.post(fal_docs, json={"prompt": "x", "image_size": {"width": 64, "height": 32}})
        assert (sized.json()["width"], sized.json()["height"]) == (64, 32)

        field = http.post(fal_docs, json={"prompt": "  "})
        assert field.status_code == 422
        assert field.json() == {
            "detail": [
                {"loc": ["body", "prompt"], "msg": "The prompt must not be empty.",
                 "type": "value_error"}
            ]
        }  # fmt: skip
        app_error = http.post(fal_docs, json={"prompt": "x", "num_images": 9})
        assert app_error.status_code == 400
        assert app_error.json() == {"detail": "At most 4 images per request."}
        # Through the queue, the error is the request's result, with its status and shape.
        queued = http.post(
            f"/queue{fal_docs}", json={"prompt": ""}
        ).json()  # no slash: as fal-client
        wait_for(
            lambda: http.get(queued["status_url"]).json()["status"] == "COMPLETED",
            what="the queued request to complete",
        )
        result = http.get(queued["response_url"])
        assert result.status_code == 422
        assert result.json()["detail"][0]["loc"] == ["body", "prompt"]


def test_a_file_saved_at_import_is_served_by_the_platform(
    platform: PlatformProcess, fal_docs: str
) -> None:
    with platform.http() as http:
        example = http.post(fal_docs, json={"prompt": "x"}).json()["example"]
        assert example["file_name"] == "example.txt"
        assert example["url"].startswith(platform.url + "/files/")  # saved in the runner
        assert http.get(example["url"]).text == "an example input\n"


def test_clone_repository_into_the_persistent_folder(
    platform: PlatformProcess, fal_docs: str
) -> None:
    origin = platform.data_dir / "data" / "origins" / "tool"
    first = _commit(origin, 'GREETING = "hello from a clone"\n')
    second = _commit(origin, 'GREETING = "changed later"\n')
    with platform.http() as http:
        assert http.post(fal_docs, json={"prompt": "x"}).status_code == 200  # a runner is up
        # The origin is the app's own folder in /data (git clones only repositories
        # owned by the user it runs as, and each app's runners have their own uid).
        _chown(origin, _app_uid(platform, "fal-docs"))
        pinned = http.post(
            f"{fal_docs}/clone", json={"url": "file:///data/origins/tool", "commit_hash": first}
        )
        assert pinned.status_code == 200, pinned.text
        got = pinned.json()
        assert got["greeting"] == "hello from a clone"
        assert got["under_persistent"] and got["path"].endswith(f"/tool-{first[:8]}")
        checkout = platform.data_dir / "data" / ".tidal" / "repos" / f"tool-{first[:8]}"
        assert _git(checkout, "rev-parse", "HEAD") == first
        assert second != first


def test_files_from_urls_audio_video_downloads_and_cached_setup(
    platform: PlatformProcess, fal_docs: str
) -> None:
    with platform.http() as http:
        example_url = http.post(fal_docs, json={"prompt": "x"}).json()["example"]["url"]
        media = http.post(
            f"{fal_docs}/media",
            json={
                "audio": "https://cdn.example.com/a/voice.mp3",
                "video": "https://cdn.example.com/v/clip.mp4",
                "file": example_url,
            },
        )
        assert media.status_code == 200, media.text
        got: dict[str, Any] = media.json()
    assert got["audio"] == "https://cdn.example.com/a/voice.mp3"
    assert got["video_name"] == "clip.mp4"
    assert got["in_memory"] == "data:text/plain;base64,YW4gZXhhbXBsZSBpbnB1dAo="
    assert got["from_url"] == "example.txt"
    assert got["downloaded"] == "an example input\n"
    assert got["model"] == "weights-v1"
    assert got["weights_marker"] == "setup ran"
    weights = platform.data_dir / "data" / ".tidal" / "model_weights" / "marker"
    assert weights.read_text() == "setup ran"


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "safe.directory=*", *args], cwd=repo, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return done.stdout.strip()


def _app_uid(platform: PlatformProcess, app: str) -> int | None:
    """The sandbox's uid for the app's runners (None without the sandbox)."""
    table = platform.data_dir / "sandbox" / "uids.json"
    if not table.exists():
        return None
    uids: dict[str, int] = json.loads(table.read_text())
    return next(uid for key, uid in uids.items() if key.split("/")[-1] == app)


def _chown(folder: Path, uid: int | None) -> None:
    if uid is None:
        return
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)


def _commit(repo: Path, greeting: str) -> str:
    if not repo.exists():
        repo.mkdir(parents=True)
        _git(repo, "init", "-q", "-b", "main")
    (repo / "greeting.py").write_text(greeting)
    _git(repo, "add", "greeting.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", greeting)
    return _git(repo, "rev-parse", "HEAD")
