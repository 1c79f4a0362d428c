"""A ComfyUI-shaped server deployed as the seed shows: direct server mode, one runner,
every other option left at its default (max_multiplexing=1)."""

import subprocess
import sys

import tidal

COMMAND = [sys.executable, "-m", "uvicorn", "server:app", "--host", "0.0.0.0", "--port", "8188"]


@tidal.function(exposed_port=8188, max_concurrency=1, keep_alive=300)
def comfy() -> None:
    subprocess.run(COMMAND, check=True)


@tidal.function(exposed_port=8188, max_concurrency=1, keep_alive=300, long_lived="slot")
def comfy_slots() -> None:
    subprocess.run(COMMAND, check=True)


@tidal.function(exposed_port=8188, min_concurrency=2, max_concurrency=2, keep_alive=300,
                affinity="cookie")  # fmt: skip
def comfy_sticky() -> None:
    subprocess.run(COMMAND, check=True)
