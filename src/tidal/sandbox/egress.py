"""A runner's way out, by app: `none` (its network namespace has loopback only) or
`internet` (a veth pair to the host and NAT, which reach outside but never an
address of the host itself nor another runner).

The host side of every pair is named `tdl…`, so a handful of host-wide firewall
rules cover all of them: nothing from a runner is delivered to the host (INPUT),
nothing is forwarded from one runner to another, and what goes out is
masqueraded. IPv6 is off on the pairs.

Each platform process adds its own copy of the rules, marked with a comment naming
it (tidal.sandbox.owners), and removes that copy when it stops; a later platform
removes the copies of platforms that provably died. The copies are alike, so one
platform's leaving never opens or closes anything for another's runners.
"""

from __future__ import annotations

import ipaddress
import random
import shlex
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from tidal.sandbox import owners

EGRESS_CHOICES = ("none", "internet")
HOST_PREFIX = "tdl"  # the host-side names of every runner's veth
RULE_MARK = "tidal:"  # the comment on each rule: "tidal:<owner>"
_rules_lock = threading.Lock()
_rules_done: set[tuple[str, str]] = set()  # (subnet, owner) installed by this process


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


def host_rules(subnet: str, owner: str) -> list[list[str]]:
    """The firewall rules (iptables arguments after the table) every runner pair needs,
    as platform process `owner` adds them."""
    pairs = f"{HOST_PREFIX}+"
    mark = ["-m", "comment", "--comment", f"{RULE_MARK}{owner}"]
    return [
        ["-t", "filter", "INPUT", "-i", pairs, *mark, "-j", "DROP"],
        ["-t", "filter", "FORWARD", "-o", pairs, *mark, "-j", "DROP"],
        ["-t", "filter", "FORWARD", "-o", pairs, "-m", "conntrack", "--ctstate",
         "ESTABLISHED,RELATED", *mark, "-j", "ACCEPT"],
        ["-t", "filter", "FORWARD", "-i", pairs, *mark, "-j", "ACCEPT"],
        ["-t", "filter", "FORWARD", "-i", pairs, "-o", pairs, *mark, "-j", "DROP"],
        ["-t", "nat", "POSTROUTING", "-s", subnet, "!", "-o", pairs, *mark, "-j", "MASQUERADE"],
    ]  # fmt: skip


def ensure_host_rules(subnet: str, owner: str) -> None:
    """Install this platform's copy of the host-wide rules once: each is inserted
    first in its chain, so the last listed ends up on top.

    IPv4 forwarding is turned on and left on at stop: it is host-wide, and whatever
    else forwards (Docker, Podman, another platform) may rely on it by then without
    setting it again (docs/security.md)."""
    with _rules_lock:
        if (subnet, owner) in _rules_done:
            return
        for rule in host_rules(subnet, owner):
            table, chain, spec = rule[:2], rule[2], rule[3:]
            if _run(["iptables", "-w", *table, "-C", chain, *spec]).returncode != 0:
                _checked(["iptables", "-w", *table, "-I", chain, "1", *spec])
        try:
            Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        except OSError as exc:
            raise EgressError(exc.errno, f"cannot turn on IPv4 forwarding: {exc}") from None
        _rules_done.add((subnet, owner))


def marked_rules() -> list[tuple[str, list[str]]]:
    """Every platform's rules now on the host: (owner, iptables arguments to delete it)."""
    found: list[tuple[str, list[str]]] = []
    for table in ("filter", "nat"):
        listing = _run(["iptables", "-w", "-t", table, "-S"])
        if listing.returncode != 0:
            continue
        for line in listing.stdout.splitlines():
            words = shlex.split(line)
            if len(words) < 2 or words[0] != "-A" or "--comment" not in words:
                continue
            comment = words[words.index("--comment") + 1]
            if comment.startswith(RULE_MARK):
                found.append((comment[len(RULE_MARK) :], ["-t", table, "-D", *words[1:]]))
    return found


def remove_rules(whose: Callable[[str], bool]) -> int:
    """Delete the marked rules of the owners `whose` picks; how many went. Quiet where
    iptables is missing (then this host has none to remove)."""
    removed = 0
    with _rules_lock:
        try:
            rules = marked_rules()
        except EgressError:
            return 0
        for owner, delete in rules:
            if whose(owner) and _run(["iptables", "-w", *delete]).returncode == 0:
                removed += 1
                _rules_done.difference_update({d for d in _rules_done if d[1] == owner})
    return removed


def remove_dead_rules() -> int:
    """At start: the rules of platform processes that provably died."""

    def dead(owner: str) -> bool:
        parsed = owners.parse(owner)
        return parsed is not None and owners.is_dead(parsed)

    return remove_rules(dead)


def pick_link(subnet: str) -> tuple[str, str, int]:
    """A /30 of `subnet` for one runner: the host's address, the runner's, the prefix."""
    network = ipaddress.ip_network(subnet)
    blocks = max(1, network.num_addresses // 4)
    base = int(network.network_address) + 4 * random.randrange(blocks)
    return str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2)), 30


def connect(pid: int, runner_id: str, subnet: str, owner: str) -> str:
    """Give process `pid`'s network namespace a way out; returns the host-side name."""
    ensure_host_rules(subnet, owner)
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
