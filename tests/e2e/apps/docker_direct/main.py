import os
import socket

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def root() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/where")
def where() -> dict[str, str | bool]:
    with open("/greeting") as f:
        greeting = f.read().strip()
    return {
        "greeting": greeting,
        "hostname": socket.gethostname(),
        "runner": os.environ.get("TIDAL_RUNNER_ID", ""),
        "in_container": any(map(os.path.exists, ("/.dockerenv", "/run/.containerenv"))),
    }
