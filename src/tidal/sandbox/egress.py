"""A runner's way out, by app: `none` (its network namespace has loopback only) or
`internet` (a veth pair to the host and NAT, which reach outside but never an
address of the host itself nor another runner).

The host side of every pair is named `tdl…`, so a handful of host-wide firewall
rules cover all of them: nothing from a runner is delivered to the host (INPUT),
nothing is forwarded from one runner to another, and what goes out is
masqueraded. IPv6 is off on the pairs.
"""

from __future__ import annotations

import ipaddress
import random
import subprocess
import threading
from pathlib import Path

EGRESS_CHOICES = ("none", "internet")
HOST_PREFIX = "tdl"  # the host-side names of every runner's veth
_rules_lock = threading.Lock()
_rules_done: set[str] = set()


class EgressError(OSError):
    pass


def _run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EgressError(0, f"{cmd[0]} failed: {exc}") from None


def _checked(cmd: list[str], stdin: str | None = None) -> None:
    done = _run(cmd, stdin)
    if done.returncode != 0:
        raise EgressError(0, f"{' '.join(cmd)} failed: {(done.stderr or done.stdout).strip()}")


def host_rules(subnet: str) -> list[list[str]]:
    """The firewall rules (iptables arguments after the table) every runner pair needs."""
    pairs = f"{HOST_PREFIX}+"
    return [
        ["-t", "filter", "INPUT", "-i", pairs, "-j", "DROP"],
        ["-t", "filter", "FORWARD", "-o", pairs, "-j", "DROP"],
        ["-t", "filter", "FORWARD", "-o", pairs, "-m", "conntrack", "--ctstate",
         "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ["-t", "filter", "FORWARD", "-i", pairs, "-j", "ACCEPT"],
        ["-t", "filter", "FORWARD", "-i", pairs, "-o", pairs, "-j", "DROP"],
        ["-t", "nat", "POSTROUTING", "-s", subnet, "!", "-o", pairs, "-j", "MASQUERADE"],
    ]  # fmt: skip


def ensure_host_rules(subnet: str) -> None:
    """Install the host-wide rules once (idempotent across platforms on one host):
    each is inserted first in its chain, so the last listed ends up on top."""
    with _rules_lock:
        if subnet in _rules_done:
            return
        for rule in host_rules(subnet):
            table, chain, spec = rule[:2], rule[2], rule[3:]
            if _run(["iptables", "-w", *table, "-C", chain, *spec]).returncode != 0:
                _checked(["iptables", "-w", *table, "-I", chain, "1", *spec])
        try:
            Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        except OSError as exc:
            raise EgressError(exc.errno, f"cannot turn on IPv4 forwarding: {exc}") from None
        _rules_done.add(subnet)


def pick_link(subnet: str) -> tuple[str, str, int]:
    """A /30 of `subnet` for one runner: the host's address, the runner's, the prefix."""
    network = ipaddress.ip_network(subnet)
    blocks = max(1, network.num_addresses // 4)
    base = int(network.network_address) + 4 * random.randrange(blocks)
    return str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2)), 30


def connect(pid: int, runner_id: str, subnet: str) -> str:
    """Give process `pid`'s network namespace a way out; returns the host-side name."""
    ensure_host_rules(subnet)
    host_name = f"{HOST_PREFIX}{runner_id[-11:]}"[:15]
    host_ip, runner_ip, prefix = pick_link(subnet)
    _checked(["ip", "link", "add", host_name, "type", "veth", "peer", "name", "eth0",
              "netns", str(pid)])  # fmt: skip
    try:
        Path(f"/proc/sys/net/ipv6/conf/{host_name}/disable_ipv6").write_text("1")
        _checked(["ip", "-b", "-"], f"addr add {host_ip}/{prefix} dev {host_name}\n"
                 f"link set {host_name} up\n")  # fmt: skip
        inside = (
            f"addr add {runner_ip}/{prefix} dev eth0\n"
            "link set eth0 up\n"
            f"route add default via {host_ip}\n"
        )
        _checked(["nsenter", f"--net=/proc/{pid}/ns/net", "--", "sh", "-c",
                  "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6; exec ip -b -"], inside)  # fmt: skip
    except (OSError, EgressError):
        disconnect(host_name)
        raise
    return host_name


def disconnect(host_name: str) -> None:
    """Remove a pair (it also goes by itself when the runner's namespace ends)."""
    _run(["ip", "link", "del", host_name])
