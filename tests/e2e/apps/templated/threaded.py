"""A module that starts a thread at import: its runners must not come from a template."""

import threading

import tidal

_stop = threading.Event()
threading.Thread(target=_stop.wait, name="import-time-worker", daemon=True).start()


class ThreadAtImport(tidal.App, keep_alive=300, max_concurrency=1):
    @tidal.endpoint("/", method="GET")
    def hello(self) -> dict[str, bool]:
        return {"ok": True}
