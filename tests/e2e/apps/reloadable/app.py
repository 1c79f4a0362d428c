"""An App whose answer changes with an edit (tests/e2e/test_cli_run.py's --reload test)."""

import os
from pathlib import Path

from pydantic import BaseModel

import tidal

VERSION = "v1"
DATA = Path(os.environ.get("TIDAL_DATA_DIR", "/data"))


class Note(BaseModel):
    text: str


class Reloadable(tidal.App, keep_alive=300, max_concurrency=2):
    @tidal.endpoint("/version", method="GET")
    def version(self) -> dict[str, str]:
        return {"version": VERSION}

    @tidal.endpoint("/remember", method="POST")
    def remember(self, note: Note) -> dict[str, str]:
        (DATA / "note.txt").write_text(note.text)
        return {"kept": note.text}

    @tidal.endpoint("/recall", method="GET")
    def recall(self) -> dict[str, str]:
        return {"note": (DATA / "note.txt").read_text()}
