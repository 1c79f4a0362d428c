import subprocess

import tidal

SERVE = ["uvicorn", "server:app", "--host", "127.0.0.1", "--port", "8000"]  # the env's uvicorn


@tidal.function(exposed_port=8000, requirements=["tabulate==0.9.0"], keep_alive=30)
def tabulated() -> None:
    subprocess.run(SERVE, check=True)


@tidal.function(exposed_port=8000, requirements=["tabulate==0.9.0"], keep_alive=30)
def also_tabulated() -> None:
    subprocess.run(SERVE, check=True)


@tidal.function(
    exposed_port=8000, requirements=["tabulate==0.9.0"], python_version="3.12", keep_alive=30
)
def on_312() -> None:
    subprocess.run(SERVE, check=True)


@tidal.function(exposed_port=8000, local_python_modules=["textkit"], keep_alive=30)
def with_local_module() -> None:
    subprocess.run(SERVE, check=True)
