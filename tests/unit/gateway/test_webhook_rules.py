"""Where the platform sends webhooks: public addresses, and others only when allowed."""

from __future__ import annotations

import asyncio

import pytest

from tidal.gateway.webhooks import check_destination, destination_problem


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.8.9.1", "::1", "169.254.169.254", "fe80::1", "10.1.2.3", "172.16.0.9",
     "192.168.1.1", "fd00::5", "0.0.0.0", "100.64.0.1", "::ffff:127.0.0.1"],
)  # fmt: skip
def test_non_public_addresses_are_refused_naming_the_setting(address: str) -> None:
    problem = destination_problem("hooks.example", [address], [])
    assert problem is not None
    assert "webhook_allowed_hosts" in problem and "hooks.example" in problem


def test_a_public_address_is_fine() -> None:
    assert destination_problem("hooks.example", ["93.184.216.34", "2606:2800::1"], []) is None


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    assert destination_problem("x.example", ["93.184.216.34", "10.0.0.1"], []) is not None


def test_the_allowlist_takes_hosts_addresses_and_networks() -> None:
    assert destination_problem("127.0.0.1", ["127.0.0.1"], ["127.0.0.1"]) is None
    assert destination_problem("Hooks.Internal.", ["10.0.0.7"], ["hooks.internal"]) is None
    assert destination_problem("a.internal", ["10.2.3.4"], ["10.0.0.0/8"]) is None
    assert destination_problem("a.internal", ["192.168.0.4"], ["10.0.0.0/8"]) is not None


def test_a_url_is_resolved_before_it_is_judged() -> None:
    async def go() -> tuple[str | None, str | None, str | None]:
        return (
            await check_destination("http://localhost:9/x", []),
            await check_destination("http://[::1]:9/x", ["::1"]),
            await check_destination("http://127.0.0.1:9/x", ["127.0.0.0/8"]),
        )

    local, allowed_v6, allowed_net = asyncio.run(go())
    assert local is not None and "localhost" in local
    assert allowed_v6 is None and allowed_net is None
