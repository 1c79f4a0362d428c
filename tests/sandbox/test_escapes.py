"""The hostile-app tier: a real platform (as root, keys on) runs a deliberately
hostile app on the local backend, and every way out of its sandbox is tried from
inside a real runner. Each test fails where runners are not sandboxed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tidal.testing import PlatformProcess, start_platform, wait_for

pytestmark = pytest.mark.slow

APPS = Path(__file__).parent / "apps"
CANARY = "tidal-platform-canary-4c1f"  # in the platform's environment only
PIDS_MAX = 128
CONFIG = (
    "health_check_interval_seconds = 0.5\n"
    f"sandbox_pids_max = {PIDS_MAX}\n"
    "[host]\ncpus = 64\nmemory_mb = 131072\n"
)


@dataclass
class Hostile:
    platform: PlatformProcess
    key: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.key}"}

    def attempt(self, action: str, app: str = "hostile", **fields: Any) -> dict[str, Any]:
        with self.platform.http(timeout=120) as http:
            resp = http.post(f"/local/{app}/try", json={"action": action, **fields},
                             headers=self.headers())  # fmt: skip
        assert resp.status_code == 200, resp.text
        outcome: dict[str, Any] = resp.json()
        return outcome

    def cli(self, *args: str) -> str:
        return self.platform.cli(*args, cwd=APPS, env={"TIDAL_KEY": self.key}).stdout

    def runners(self, app: str) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(self.cli("runners", "list", app, "--json"))
        return listed


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    if os.geteuid() != 0:
        pytest.skip("the sandbox tier runs the platform as root, as the README does")
    data_dir = tmp_path_factory.mktemp("platform")
    (data_dir / "tidal.toml").write_text(CONFIG)
    with start_platform(data_dir, auth=True, env={"TIDAL_CANARY": CANARY}) as running:
        key = (data_dir / "admin.key").read_text().strip()
        found = Hostile(running, key)
        for app in ("Hostile", "Online", "Neighbor"):
            found.cli("deploy", f"hostile.py::{app}", "--app-name", app.lower())
        yield found


def _platform_pid(h: Hostile) -> int:
    return h.platform.process.pid


def test_admin_key_is_out_of_reach(hostile: Hostile) -> None:
    key_file = hostile.platform.data_dir / "admin.key"
    assert key_file.is_file()
    outcome = hostile.attempt("read", path=str(key_file))
    assert not outcome["ok"], outcome
    assert hostile.key not in json.dumps(outcome)


def test_secrets_key_is_out_of_reach(hostile: Hostile) -> None:
    key_file = hostile.platform.data_dir / "secrets.key"
    assert key_file.is_file()
    assert not hostile.attempt("read", path=str(key_file))["ok"]


def test_database_is_out_of_reach(hostile: Hostile) -> None:
    database = hostile.platform.data_dir / "tidal.db"
    assert database.is_file()
    assert not hostile.attempt("read", path=str(database))["ok"]


def test_other_apps_bundles_cannot_be_read_or_written(hostile: Hostile) -> None:
    own = {Path(hostile.attempt("cwd")["detail"]).name}  # its own code's folder
    bundles = hostile.platform.data_dir / "bundles"
    others = [
        p
        for p in bundles.iterdir()
        if p.is_dir() and p.name not in own and not p.name.startswith(".")
    ]
    listed = hostile.attempt("listdir", path=str(bundles))
    assert not any(other.name in listed["detail"] for other in others), listed
    for other in others:
        target = other / "hostile.py"
        assert not hostile.attempt("read", path=str(target))["ok"]
        assert not hostile.attempt("write", path=str(target))["ok"]
        assert "hostile app" not in target.read_text()
    for digest in own:  # and its own code is read-only
        assert not hostile.attempt("write", path=str(bundles / digest / "hostile.py"))["ok"]


def test_platform_environment_is_not_passed_on(hostile: Hostile) -> None:
    env = hostile.attempt("environ")["detail"]
    assert CANARY not in env
    assert "TIDAL_RUNNER_ID=" in env  # its own variables are there
    environ = hostile.attempt("read", path=f"/proc/{_platform_pid(hostile)}/environ")
    assert not environ["ok"] or CANARY.encode().hex() not in environ["detail"]


def test_platform_cannot_be_signalled(hostile: Hostile) -> None:
    outcome = hostile.attempt("signal", pid=_platform_pid(hostile))
    assert not outcome["ok"], outcome


def test_platform_network_namespace_cannot_be_entered(hostile: Hostile) -> None:
    port = int(hostile.platform.url.rsplit(":", 1)[1])
    for path in (f"/proc/{_platform_pid(hostile)}/ns/net", "/proc/1/ns/net"):
        outcome = hostile.attempt("setns", path=path, host="127.0.0.1", port=port)
        assert not outcome["ok"], outcome


def test_platform_port_is_unreachable(hostile: Hostile) -> None:
    port = int(hostile.platform.url.rsplit(":", 1)[1])
    outcome = hostile.attempt("connect", host="127.0.0.1", port=port)
    assert not outcome["ok"], outcome


def test_another_runners_port_is_unreachable(hostile: Hostile) -> None:
    with hostile.platform.http() as http:
        assert http.post("/local/neighbor/hello", headers=hostile.headers()).status_code == 200
    neighbor = next(r for r in hostile.runners("neighbor") if r["state"] in ("idle", "running"))
    port = int(neighbor["address"].rsplit(":", 1)[1])
    outcome = hostile.attempt("connect", host="127.0.0.1", port=port)
    assert not outcome["ok"], outcome


def test_fork_bomb_is_contained(hostile: Hostile) -> None:
    outcome = hostile.attempt("forkbomb", count=PIDS_MAX * 4)
    assert not outcome["ok"], outcome  # fork was refused
    assert outcome["number"] < PIDS_MAX
    with hostile.platform.http() as http:  # the platform never noticed
        assert http.get("/api/v1/health").status_code == 200


def test_cpu_is_held_to_the_machine_types_share(hostile: Hostile) -> None:
    """XS is half a CPU: two busy processes get about 0.5 CPU-seconds per second."""
    outcome = hostile.attempt("cpu", count=2, pid=3000)
    print(f"XS runner, 2 busy processes: {outcome['number']:.2f} CPUs")
    assert outcome["number"] <= 0.5 * 1.3, outcome


def test_memory_hog_is_killed_and_the_reason_shown(hostile: Hostile) -> None:
    before = {r["id"] for r in hostile.runners("hostile")}
    with hostile.platform.http(timeout=120) as http:
        resp = http.post("/local/hostile/try", json={"action": "hog", "count": 2048},
                         headers=hostile.headers())  # fmt: skip
    assert resp.status_code >= 500

    def ended() -> list[dict[str, Any]]:
        return [
            r for r in hostile.runners("hostile") if r["id"] in before and r["state"] == "failed"
        ]

    [failed] = wait_for(ended, timeout=60, what="the hog's runner to fail")
    assert failed["reason"] == "out of memory: machine type XS allows 512 MB"


# -- egress ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outside() -> Iterator[tuple[str, int]]:
    """A network namespace standing in for the outside world, with an HTTP server."""
    tag = os.urandom(3).hex()
    name, link, third = f"tidal-out-{tag}", f"tout{tag}", int(tag[:2], 16)
    host_ip, server_ip = f"198.18.{third}.1", f"198.18.{third}.2"
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", name],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", link],
        ["ip", "link", "set", link, "up"],
        ["ip", "-n", name, "addr", "add", f"{server_ip}/30", "dev", "eth0"],
        ["ip", "-n", name, "link", "set", "eth0", "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
    ]
    server = None
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-m", "http.server", "8080",
             "--bind", server_ip], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def up() -> bool:
            probe = subprocess.run(
                ["ip", "netns", "exec", name, sys.executable, "-c",
                 f"import socket; socket.create_connection(({server_ip!r}, 8080), 1)"],
                capture_output=True,
            )  # fmt: skip
            return probe.returncode == 0

        wait_for(up, timeout=30, what="the outside server")
        yield server_ip, 8080
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def host_server() -> Iterator[int]:
    """A server on every address of the host: what a runner must never reach."""
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))
    sock.listen()
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_internet_egress_reaches_outside(hostile: Hostile, outside: tuple[str, int]) -> None:
    host, port = outside
    outcome = hostile.attempt("connect", app="online", host=host, port=port)
    assert outcome["ok"], outcome
    assert outcome["detail"].startswith("HTTP/1.0")


def test_internet_egress_never_reaches_the_host(hostile: Hostile, host_server: int) -> None:
    gateway = hostile.attempt("gateway", app="online")
    assert gateway["ok"], gateway
    for host in (gateway["detail"], "127.0.0.1"):
        outcome = hostile.attempt("connect", app="online", host=host, port=host_server)
        assert not outcome["ok"], (host, outcome)
    platform_port = int(hostile.platform.url.rsplit(":", 1)[1])
    outcome = hostile.attempt("connect", app="online", host=gateway["detail"], port=platform_port)
    assert not outcome["ok"], outcome


def test_no_egress_reaches_nothing(
    hostile: Hostile, outside: tuple[str, int], host_server: int
) -> None:
    host, port = outside
    assert not hostile.attempt("connect", host=host, port=port)["ok"]
    assert not hostile.attempt("connect", host="127.0.0.1", port=host_server)["ok"]
    assert not hostile.attempt("gateway")["ok"]


def test_egress_option_is_checked_at_deploy(hostile: Hostile, tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "import tidal\n\n@tidal.function(exposed_port=8000, egress='everywhere')\n"
        "def bad() -> None:\n    pass\n"
    )
    done = hostile.platform.cli("deploy", "bad.py::bad", cwd=tmp_path, check=False,
                                env={"TIDAL_KEY": hostile.key})  # fmt: skip
    assert done.returncode != 0
    assert "egress" in done.stderr + done.stdout
    assert "'internet'" in done.stderr + done.stdout


def test_runner_runs_as_its_apps_own_uid_without_capabilities(hostile: Hostile) -> None:
    me = hostile.attempt("whoami")
    neighbor = hostile.attempt("whoami", app="online")
    uid, caps, no_new_privs = me["detail"].split()
    assert int(uid) >= 700_000 and uid != neighbor["detail"].split()[0]
    assert int(caps, 16) == 0 and no_new_privs == "1"
