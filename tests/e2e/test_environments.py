"""Apps' own environments: requirements from PyPI, Python versions, local modules."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tidal.environments import interpreters
from tidal.testing import PlatformProcess

pytestmark = pytest.mark.slow

APPS = Path(__file__).parent / "apps"
ENVS = APPS / "envs"


def deploy(platform: PlatformProcess, target: str, **kwargs: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        platform.cli("deploy", target, "--json", cwd=ENVS, timeout=600, **kwargs).stdout
    )
    return out


def test_requirements_install_into_a_shared_cached_environment(platform: PlatformProcess) -> None:
    started = time.monotonic()
    deploy(platform, "app.py::tabulated")  # builds the environment, at deploy time
    built = time.monotonic() - started
    with platform.http() as http:
        first = http.get("/local/tabulated/").json()
    cold = time.monotonic() - started
    assert first["tabulate"] == "0.9.0"
    envs = [p for p in (platform.data_dir / "envs").iterdir() if (p / "tidal-env.json").exists()]
    assert len(envs) == 1
    assert first["executable"].startswith(str(envs[0]))

    started = time.monotonic()
    deploy(platform, "app.py::also_tabulated")  # same requirements: the same environment
    with platform.http() as http:
        second = http.get("/local/also-tabulated/").json()
    warm = time.monotonic() - started
    assert second["executable"] == first["executable"]
    assert len(list((platform.data_dir / "envs").iterdir())) == 1
    print(
        f"\ndeploy to first response: cold {cold:.2f}s (env build {built:.2f}s), warm {warm:.2f}s"
    )


@pytest.mark.skipif(
    not any(v.startswith("3.12.") for v in interpreters()), reason="no Python 3.12 on this host"
)
def test_python_version_picks_an_installed_interpreter(platform: PlatformProcess) -> None:
    deploy(platform, "app.py::on_312")
    with platform.http(timeout=120) as http:
        seen = http.get("/local/on-312/").json()
    assert seen["python"] == "3.12"
    assert seen["tabulate"] == "0.9.0"


def test_local_python_modules_are_shipped(platform: PlatformProcess) -> None:
    deploy(platform, "app.py::with_local_module", env={"PYTHONPATH": str(APPS / "shared_lib")})
    with platform.http() as http:
        assert http.get("/local/with-local-module/shout").json() == {"text": "HELLO!"}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("conflicting", "conflict with what tidal's runtime needs"),
        ("unresolvable", "tidal-no-such-package-anywhere"),
        ("missing_python", "python_version '3.99' is not installed on the platform's host"),
        ("missing_module", "local_python_modules: cannot find 'no_such_local_module'"),
    ],
)
def test_bad_environments_fail_the_deploy_with_the_reason(
    platform: PlatformProcess, name: str, message: str
) -> None:
    done = platform.cli("deploy", f"broken.py::{name}", cwd=ENVS, check=False, timeout=600)
    assert done.returncode == 1
    assert message in " ".join(done.stderr.split()), done.stderr
    assert "Traceback" not in done.stderr
    apps = json.loads(platform.cli("apps", "list", "--json").stdout)
    assert name.replace("_", "-") not in {a["name"] for a in apps}
