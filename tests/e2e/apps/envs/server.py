import sys

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def root() -> dict[str, object]:
    import tabulate  # not installed where the platform runs: from the app's environment

    return {
        "tabulate": tabulate.__version__,
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "executable": sys.executable,
    }


@app.get("/shout")
def shout() -> dict[str, str]:
    from textkit import shout

    return {"text": shout("hello")}
