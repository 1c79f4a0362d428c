import os
from pathlib import Path

from pydantic import BaseModel

import tidal


class Note(BaseModel):
    name: str
    text: str = ""


class Writer(tidal.App, keep_alive=30):
    machine_type = "XS"

    @tidal.endpoint("/write")
    def write(self, note: Note) -> dict[str, str]:
        Path("/data", note.name).write_text(note.text)
        return {"runner": os.environ["TIDAL_RUNNER_ID"], "data_dir": os.environ["TIDAL_DATA_DIR"]}


class Reader(tidal.App, keep_alive=30):
    machine_type = "XS"

    @tidal.endpoint("/read")
    def read(self, note: Note) -> dict[str, str]:
        return {
            "runner": os.environ["TIDAL_RUNNER_ID"],
            "text": Path("/data", note.name).read_text(),
        }
