from __future__ import annotations

import ipaddress

from tidal.sandbox.egress import host_rules, pick_link


def test_each_runner_gets_a_30_inside_the_subnet() -> None:
    for _ in range(200):
        host, runner, prefix = pick_link("100.72.0.0/16")
        link = ipaddress.ip_network(f"{host}/{prefix}", strict=False)
        assert prefix == 30 and ipaddress.ip_address(runner) in link
        assert link.subnet_of(ipaddress.ip_network("100.72.0.0/16"))
        assert int(ipaddress.ip_address(host)) % 4 == 1


def test_rules_never_deliver_to_the_host_nor_between_runners() -> None:
    rules = [" ".join(r) for r in host_rules("100.72.0.0/16", "abc")]
    mark = "-m comment --comment tidal:abc"
    assert f"-t filter INPUT -i tdl+ {mark} -j DROP" in rules
    # Inserted first in turn: the last (runner-to-runner drop) ends on top of FORWARD.
    assert rules[-2] == f"-t filter FORWARD -i tdl+ -o tdl+ {mark} -j DROP"
    assert rules[-1].startswith("-t nat POSTROUTING -s 100.72.0.0/16")
    # Every rule names its platform process, which removes exactly its own at stop.
    assert all(mark in r for r in rules)
