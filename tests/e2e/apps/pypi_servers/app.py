"""Real servers from PyPI in direct server mode, as the seed shows them: one runner,
every other option at its default (max_multiplexing=1). They run on the platform's own
interpreter (no `requirements`), so the test environment's gradio and jupyter_server
serve without building an environment per test run."""

import os
import subprocess
import sys
import tempfile

import tidal


@tidal.function(exposed_port=8888, max_concurrency=1, keep_alive=300)
def jupyter() -> None:
    root = tempfile.mkdtemp(prefix="jupyter-")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": root, "JUPYTER_DATA_DIR": root}
    subprocess.run(
        [sys.executable, "-m", "jupyter_server", "--ip=0.0.0.0", "--port=8888", "--no-browser",
         f"--ServerApp.root_dir={root}", "--IdentityProvider.token=tidal-test",
         "--allow-root"],  # CI machines run tests as root
        check=True, env=env,
    )  # fmt: skip


@tidal.function(exposed_port=7860, max_concurrency=1, keep_alive=300, startup_timeout=300)
def gradio_ui() -> None:
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_ROOT_PATH": "/local/gradio-ui",
    }
    subprocess.run([sys.executable, "ui.py"], check=True, env=env)
