"""The fal import shim: `import fal` finds tidal's names when no real fal is installed.

Each check runs in a fresh interpreter, so that this process's `sys.path` and
`sys.modules` never see the shim (or a fake fal).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tidal.compat import SHIM_DIR, unsupported_message

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def run_python(
    code: str, pythonpath: Path | None = None, cwd: Path | None = None, **env: str
) -> Any:
    """Run `code` in a new interpreter; it prints one JSON value, returned here."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TIDAL_RUNNER_ID")}
    if pythonpath is not None:
        clean["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_the_shim_there_is_no_fal() -> None:
    # The tests below mean something only where the real fal is not installed.
    assert run_python("""
        import importlib.util, json
        print(json.dumps(importlib.util.find_spec("fal") is None))
    """)


def test_supported_names_are_tidals_objects() -> None:
    result = run_python("""
        import json, sys
        from tidal.compat import SHIM_DIR, install_fal_shim
        installed = install_fal_shim()
        again = install_fal_shim()
        import fal
        import fal.container
        import fal.toolkit
        from fal.container import ContainerImage
        from fal.toolkit import File, Image, download_file, download_model_weights
        import tidal, tidal.toolkit
        print(json.dumps({
            "installed": installed,
            "again": again,
            "shim_last": sys.path[-1] == str(SHIM_DIR),
            "shim_once": sys.path.count(str(SHIM_DIR)) == 1,
            "fal_file": fal.__file__,
            "App": fal.App is tidal.App,
            "endpoint": fal.endpoint is tidal.endpoint,
            "HealthCheck": fal.HealthCheck is tidal.HealthCheck,
            "ContainerImage": fal.ContainerImage is tidal.ContainerImage,
            "container.ContainerImage": ContainerImage is tidal.ContainerImage,
            "fal.container.ContainerImage": fal.container.ContainerImage is tidal.ContainerImage,
            "File": File is tidal.toolkit.File and fal.toolkit.File is File,
            "Image": Image is tidal.toolkit.Image and fal.toolkit.Image is Image,
            "download_file": download_file is tidal.toolkit.download_file,
            "download_model_weights": download_model_weights is tidal.toolkit.download_model_weights,
            "dir": dir(fal),
            "toolkit_dir": dir(fal.toolkit),
        }))
    """)
    assert result.pop("installed") and result.pop("again")
    assert result.pop("fal_file").startswith(str(SHIM_DIR))
    assert result.pop("dir") == [
        "App", "ContainerImage", "HealthCheck", "cached", "container", "distributed", "endpoint",
        "exceptions", "function", "realtime", "toolkit", "wrap_app",
    ]  # fmt: skip
    assert {"File", "Image", "download_file", "clone_repository", "FAL_MODEL_WEIGHTS_DIR",
            "image", "utils"} <= set(result.pop("toolkit_dir"))  # fmt: skip
    assert all(result.values()), result


def test_fal_function_takes_a_kind_and_passes_options_to_tidal() -> None:
    result = run_python("""
        import json
        from tidal.compat import install_fal_shim
        install_fal_shim()
        import fal, tidal

        def body() -> None: ...

        plain = fal.function(machine_type="S", exposed_port=8000, keep_alive=300)(body)
        venv = fal.function("virtualenv", max_concurrency=5)(body)
        container = fal.function(kind="container", request_timeout=600)(body)
        errors = {}
        for label, make in {
            "conda": lambda: fal.function("conda"),
            "bare": lambda: fal.function(body),
            "typo": lambda: fal.function(keepalive=3),
        }.items():
            try:
                make()
            except Exception as exc:
                errors[label] = [type(exc).__name__, str(exc)]
        print(json.dumps({
            "types": [isinstance(f, tidal.Function) for f in (plain, venv, container)],
            "plain": [plain.options.machine_type, plain.options.exposed_port,
                      plain.options.keep_alive],
            "venv": [venv.options.max_concurrency, venv.options.keep_alive,
                     venv.options.machine_type],
            "container": container.options.request_timeout,
            "errors": errors,
        }))
    """)
    assert result["types"] == [True, True, True]
    assert result["plain"] == ["S", 8000, 300]
    assert result["venv"] == [5, 10, "XS"]  # fal's function defaults
    assert result["container"] == 600
    errors = result["errors"]
    assert errors["conda"][0] == "InvalidOptionError"
    assert "kind 'conda' is not supported by tidal" in errors["conda"][1]
    assert errors["bare"] == [
        "TypeError",
        "fal.function needs parentheses: write @fal.function(...) "
        "(with no options, @fal.function())",
    ]
    assert errors["typo"][0] == "InvalidOptionError"
    assert "Did you mean 'keep_alive'?" in errors["typo"][1]


def test_unsupported_names_say_what_is_supported() -> None:
    result = run_python("""
        import json
        from tidal.compat import install_fal_shim
        install_fal_shim()
        import fal

        seen = {}
        for stmt in [
            "fal.sync_dir",
            "from fal import sync_dir",
            "import fal.toolkit.compilation",
            "from fal.toolkit import KVStore",
            "fal.toolkit.KVStore",
            "import fal.toolkit.kv",
            "from fal.toolkit.image import ImageField",
            "from fal.container import ContainerImageBuilder",
        ]:
            try:
                exec(stmt)
                seen[stmt] = None
            except Exception as exc:
                seen[stmt] = [type(exc).__name__, str(exc)]
        seen["hasattr"] = hasattr(fal, "realtime")
        seen["private"] = hasattr(fal, "__version__")
        print(json.dumps(seen))
    """)
    assert result.pop("hasattr") is True  # fal.realtime is supported
    assert result.pop("private") is False
    expected = {
        "fal.sync_dir": ("AttributeError", "fal.sync_dir"),
        "from fal import sync_dir": ("FalCompatError", "fal.sync_dir"),
        "import fal.toolkit.compilation": ("ModuleNotFoundError", "fal.toolkit.compilation"),
        "from fal.toolkit import KVStore": ("FalCompatError", "fal.toolkit.KVStore"),
        "fal.toolkit.KVStore": ("AttributeError", "fal.toolkit.KVStore"),
        "import fal.toolkit.kv": ("ModuleNotFoundError", "fal.toolkit.kv"),
        "from fal.toolkit.image import ImageField": (
            "FalCompatError",
            "fal.toolkit.image.ImageField",
        ),
        "from fal.container import ContainerImageBuilder": (
            "FalCompatError",
            "fal.container.ContainerImageBuilder",
        ),
    }
    for stmt, (kind, name) in expected.items():
        assert result[stmt] == [kind, unsupported_message(name)], stmt
        assert "not supported by tidal's fal compatibility layer; " in result[stmt][1]


def test_a_real_fal_is_never_shadowed(tmp_path: Path) -> None:
    fake = tmp_path / "site" / "fal"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("REAL = True\n")
    result = run_python(
        """
        import json, sys
        from tidal.compat import SHIM_DIR, install_fal_shim
        installed = install_fal_shim()
        import fal
        print(json.dumps({
            "installed": installed,
            "real": getattr(fal, "REAL", False),
            "shim_on_path": str(SHIM_DIR) in sys.path,
        }))
        """,
        pythonpath=tmp_path / "site",
    )
    assert result == {"installed": False, "real": True, "shim_on_path": False}


def test_a_real_fal_already_imported_is_kept(tmp_path: Path) -> None:
    fake = tmp_path / "site" / "fal"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("REAL = True\n")
    result = run_python(
        """
        import json
        import fal
        from tidal.compat import install_fal_shim
        print(json.dumps([install_fal_shim(), fal.REAL]))
        """,
        pythonpath=tmp_path / "site",
    )
    assert result == [False, True]


def test_a_runner_importing_fal_does_not_import_pydantic() -> None:
    # Cold starts: tidal keeps pydantic out of a runner until the user's code needs it.
    result = run_python(
        """
        import json, sys
        from tidal.compat import install_fal_shim
        install_fal_shim()
        import fal

        @fal.function(machine_type="S", exposed_port=8000)
        def run_server() -> None: ...

        print(json.dumps("pydantic" in sys.modules))
        """,
        TIDAL_RUNNER_ID="r-test",
    )
    assert result is False


@pytest.mark.parametrize(
    ("example", "target", "expected"),
    [
        ("fal_direct_server", "app.py::run_server",
         {"kind": "function", "machine_type": "S", "exposed_port": 8000, "keep_alive": 300,
          "max_concurrency": 5, "request_timeout": 600, "startup_timeout": 300}),
        ("fal_proxy_app", "app.py::MyServerProxy",
         {"kind": "app", "machine_type": "S", "keep_alive": 300, "max_concurrency": 1}),
        ("fal_metadata", "app.py::sentiment",
         {"kind": "function", "machine_type": "XS", "exposed_port": 8000, "keep_alive": 10}),
    ],
)  # fmt: skip
def test_the_fal_examples_load_as_the_cli_loads_them(
    example: str, target: str, expected: dict[str, Any]
) -> None:
    spec = run_python(
        f"""
        import json
        from tidal.compat import install_fal_shim
        install_fal_shim()
        from tidal.cli.deploy import build_spec, default_app_name, load_target

        path, name, found = load_target({target!r})
        spec = build_spec(path, name, found, default_app_name(name, found), "0" * 64)
        print(json.dumps(spec.model_dump(mode="json")))
        """,
        cwd=EXAMPLES / example,
    )
    assert spec["kind"] == expected.pop("kind")
    for option, value in expected.items():
        assert spec["options"][option] == value, option
    if example == "fal_proxy_app":
        assert spec["name"] == "my-server-proxy"
        response = spec["openapi"]["components"]["schemas"]["GenerateResponse"]
        assert response["required"] == ["image"]
        assert "/generate" in spec["openapi"]["paths"]
    if example == "fal_metadata":
        assert spec["openapi"]["info"]["title"] == "sentiment"
        assert set(spec["openapi"]["paths"]) == {"/", "/predict"}
