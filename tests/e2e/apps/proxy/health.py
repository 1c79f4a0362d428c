import threading

import tidal

# In the runner's memory: its code folder is read-only in the sandbox, and a
# replacement runner starts well.
SICK = threading.Event()


class Checked(tidal.App, keep_alive=30):
    machine_type = "XS"

    @tidal.endpoint(
        "/health",
        method="GET",
        health_check=tidal.HealthCheck(
            start_period_seconds=0, timeout_seconds=1, failure_threshold=2
        ),
    )
    def health(self) -> dict[str, str]:
        if SICK.is_set():
            raise RuntimeError("the model fell over")
        return {"status": "fine"}

    @tidal.endpoint("/make-sick")
    def make_sick(self) -> dict[str, bool]:
        SICK.set()
        return {"sick": True}

    @tidal.endpoint("/make-well")
    def make_well(self) -> dict[str, bool]:
        SICK.clear()
        return {"sick": False}
