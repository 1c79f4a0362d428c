"""The pure parts of image building: content addresses, the runtime layer, probes, auth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tidal.images.auth import RegistryAuthError, auth_config, registry_of
from tidal.images.builder import BuildLog, _split_ref, runtime_layer_failure
from tidal.images.keys import (
    PTH_NAME,
    RUNTIME_DIR,
    context_digest,
    image_key,
    python_problem,
    runtime_layer_dockerfile,
)
from tidal.runtime.image_check import PREFIX as CHECK_PREFIX
from tidal.runtime.image_check import too_old
from tidal.sdk.image import ContainerImage


def test_image_key_changes_with_every_input() -> None:
    base = ContainerImage.from_dockerfile_str("FROM x\n", build_args={"A": "1"})
    key = image_key(base, runtime="r1")
    assert key == image_key(ContainerImage.from_dockerfile_str("FROM x\n", {"A": "1"}), "r1")
    others = {
        image_key(ContainerImage.from_dockerfile_str("FROM y\n", {"A": "1"}), "r1"),
        image_key(ContainerImage.from_dockerfile_str("FROM x\n", {"A": "2"}), "r1"),
        image_key(base, runtime="r2"),
        image_key(base, runtime="r1", context="c"),
        image_key(base, runtime="r1", pulled_id="sha256:1"),
    }
    assert key not in others and len(others) == 5


def test_context_digest_sees_content_names_and_modes(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "run.sh").write_text("echo\n")
    first = context_digest(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.pyc").write_bytes(b"ignored")
    assert context_digest(tmp_path) == first
    (tmp_path / "run.sh").chmod(0o755)
    assert context_digest(tmp_path) != first
    (tmp_path / "run.sh").chmod(0o644)
    (tmp_path / "run.sh").write_text("echo 2\n")
    assert context_digest(tmp_path) != first


def test_runtime_layer_keeps_the_images_user() -> None:
    text = runtime_layer_dockerfile("tidal-user:k", "appuser", "k")
    lines = text.splitlines()
    assert lines[0] == "FROM tidal-user:k"
    assert lines[1] == "USER root"
    assert f"COPY tidal-runtime {RUNTIME_DIR}" in lines
    run = next(line for line in lines if line.startswith("RUN "))
    argv = json.loads(run.removeprefix("RUN "))  # exec form: the image needs no shell
    assert argv[:2] == ["python3", "-c"] and PTH_NAME in argv[2]
    assert "getsitepackages()[-1]" in argv[2]  # last on sys.path: the user's pins win
    assert json.loads(lines[-3].removeprefix("RUN ")) == [
        "python3", "-m", "tidal.runtime.image_check"
    ]  # fmt: skip
    assert lines[-2] == "USER appuser"
    assert "USER appuser" not in runtime_layer_dockerfile("b", "", "k")


def test_python_problem() -> None:
    ok = json.dumps({"version": "3.11", "machine": "x86_64", "libc": "glibc"})
    assert python_problem(ok) is None
    assert "no `python3`" in str(python_problem(None))
    old = json.dumps({"version": "3.8", "machine": "x86_64", "libc": "glibc"})
    assert "3.8" in str(python_problem(old)) and ">= 3.10" in str(python_problem(old))
    musl = json.dumps({"version": "3.12", "machine": "x86_64", "libc": "musl"})
    assert "glibc" in str(python_problem(musl))


def test_build_log_names_the_failing_step() -> None:
    log = BuildLog()
    log.feed({"stream": "Step 1/3 : FROM x\n ---> abc\n"})
    shown, _ = log.feed({"stream": "Step 2/3 : RUN make\n"})
    assert shown == ["Step 2/3 : RUN make"]
    log.feed({"stream": "compiling\nerror: no compiler\n"})
    _, error = log.feed({"error": "x", "errorDetail": {"message": "returned a non-zero code: 2"}})
    assert error == "returned a non-zero code: 2"
    message = log.failure(error)
    assert "at Step 2/3 : RUN make" in message and "error: no compiler" in message
    # Buildah's (Podman's) form of the same.
    podman = BuildLog()
    shown, _ = podman.feed({"stream": "[1/2] STEP 2/4: RUN make\n--> 1f2e3d\nmade\n"})
    assert shown == ["[1/2] STEP 2/4: RUN make", "made"]
    assert podman.step == "[1/2] STEP 2/4: RUN make"


def test_image_check_names_a_pin_too_old_for_the_runtime() -> None:
    installed = {
        "pydantic": ("1.10.13", "/usr/lib/python3/dist-packages"),
        "fastapi": ("0.115.0", "/x"),
    }
    problems = too_old(["pydantic>=2.6", "fastapi>=0.110", "httpx>=0.27"], installed.get)
    assert problems == [
        "the image has pydantic 1.10.13 (in /usr/lib/python3/dist-packages), but tidal's "
        "runtime needs pydantic>=2.6: raise or drop that pin in the Dockerfile or the "
        "app's requirements"
    ]
    assert too_old(["pydantic>=2.6"], {"pydantic": ("2.10.0rc1", "/x")}.get) == []
    assert too_old(["fastapi>=0.110"], {"fastapi": ("0.99.1", "/x")}.get) != []


def test_runtime_layer_failure_prefers_the_checks_verdict() -> None:
    lines = ["Step 5/6 : RUN python3 -m tidal.runtime.image_check",
             f"{CHECK_PREFIX}the image has pydantic 1.10.13 (in /x), but ..."]  # fmt: skip
    message = runtime_layer_failure(lines, "returned a non-zero code: 1")
    assert (
        message
        == "the image can't run tidal's runtime: the image has pydantic 1.10.13 (in /x), but ..."
    )
    other = runtime_layer_failure(["Step 3/6 : COPY x", "no space left"], "boom")
    assert "boom" in other and "no space left" in other


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"username": "u", "password": "p"}', {"username": "u", "password": "p"}),
        ('{"token": "t"}', {"identitytoken": "t"}),
        ("AWS:longtoken", {"username": "AWS", "password": "longtoken"}),
    ],
)
def test_registry_auth_forms(value: str, expected: dict[str, str]) -> None:
    config = auth_config("123.dkr.ecr.eu-west-1.amazonaws.com/app:1", "REG", {"REG": value})
    assert config == {"serveraddress": "123.dkr.ecr.eu-west-1.amazonaws.com", **expected}


def test_registry_auth_errors_name_the_fix() -> None:
    with pytest.raises(RegistryAuthError, match="tidal secrets set REG"):
        auth_config("repo/app", "REG", {})
    with pytest.raises(RegistryAuthError, match="not registry credentials"):
        auth_config("repo/app", "REG", {"REG": "just-a-token-without-colon"})


def test_registry_of_and_split_ref() -> None:
    assert registry_of("library/python:3.11") == "docker.io"
    assert registry_of("python") == "docker.io"
    assert registry_of("localhost:5000/app:1") == "localhost:5000"
    assert registry_of("europe-docker.pkg.dev/p/r/app") == "europe-docker.pkg.dev"
    assert _split_ref("localhost:5000/app:1") == ("localhost:5000/app", "1")
    assert _split_ref("localhost:5000/app") == ("localhost:5000/app", "latest")
    assert _split_ref("app@sha256:abc") == ("app@sha256:abc", "")
