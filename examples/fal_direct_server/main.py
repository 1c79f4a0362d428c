"""The existing server: a FastAPI app that knows nothing of fal or tidal."""

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="greeter")


class Greeting(BaseModel):
    name: str


@app.get("/")
def root() -> dict[str, str]:
    return {"hello": "world", "served_by": "a fal direct server"}


@app.post("/greet")
def greet(greeting: Greeting) -> dict[str, str]:
    return {"message": f"hello, {greeting.name}"}
