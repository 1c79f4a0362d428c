from pathlib import Path

import tidal

SICK = Path(__file__).with_name(".sick")


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
        if SICK.exists():
            raise RuntimeError("the model fell over")
        return {"status": "fine"}

    @tidal.endpoint("/make-sick")
    def make_sick(self) -> dict[str, bool]:
        SICK.touch()
        return {"sick": True}

    @tidal.endpoint("/make-well")
    def make_well(self) -> dict[str, bool]:
        SICK.unlink(missing_ok=True)
        return {"sick": False}
