"""A server that reports the secret it was started with (and never logs it)."""

import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/token")
async def token() -> dict[str, object]:
    return {
        "API_TOKEN": os.environ.get("API_TOKEN"),
        "PEM": os.environ.get("PEM"),
        "runner": os.environ.get("TIDAL_RUNNER_ID"),
    }
