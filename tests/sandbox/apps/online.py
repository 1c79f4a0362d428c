"""A sandboxed app with a way out (egress = "internet"): its runners get a veth pair
and the platform's firewall rules."""

from __future__ import annotations

import tidal


class Online(tidal.App, keep_alive=300):
    machine_type = "XS"
    egress = "internet"

    @tidal.endpoint("/hello")
    def hello(self) -> dict[str, str]:
        return {"hello": "online"}
