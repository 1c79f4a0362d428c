"""`tidal doctor`: is the platform the CLI points at reachable, and what does it offer?

Everything about the platform comes from its control API (the CLI is only a client);
the Python interpreters are this machine's.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tidal import __version__
from tidal.cli.client import Client, CLIError, Target, mask_key, resolve
from tidal.cli.profiles import loose_permissions

OK, WARN, FAIL = "ok", "warn", "fail"
SYMBOLS = {OK: ("✓", "green"), WARN: ("!", "yellow"), FAIL: ("✗", "red")}
# Below these, the data directory's disk is a failure or a warning (bundles, logs,
# environments and /data all live there).
DISK_FAIL_BYTES = 256 * 2**20
DISK_WARN_BYTES = 2**30
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
PYTHON_NAME = re.compile(r"python3\.\d+")

console = Console()


@dataclass
class Check:
    check: str
    status: str  # OK, WARN or FAIL
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_connection(target: Target, client: Client) -> tuple[Check, dict[str, Any] | None]:
    try:
        health: dict[str, Any] = client.get("/api/v1/health")
    except CLIError as exc:
        return Check("connection", FAIL, str(exc), {"url": target.url}), None
    version = health.get("version")
    detail = (
        f"{target.where}: tidal {version}, backend {health.get('backend')}, "
        f"data {health.get('data_dir')}"
    )
    data = {"url": target.url, "source": target.url_source, **health}
    if version != __version__:
        return Check("connection", WARN, f"{detail}; this CLI is {__version__}", data), health
    return Check("connection", OK, detail, data), health


def check_key(target: Target, client: Client, reachable: bool) -> Check:
    check = _probe_key(target, client, reachable)
    if problem := loose_permissions():
        check.detail += f"; {problem}"
        if check.status == OK:
            check.status = WARN
    return check


def _probe_key(target: Target, client: Client, reachable: bool) -> Check:
    data: dict[str, Any] = {
        "present": target.key is not None,
        "key": mask_key(target.key) if target.key else None,
        "source": target.key_source,
        "enforced": None,
    }
    have = f"{mask_key(target.key)} (from {target.key_source})" if target.key else "no key"
    if not reachable:
        return Check("key", WARN, f"{have}; not checked: no platform", data)
    try:  # does the platform answer an API call that carries no key?
        anonymous = httpx.get(f"{target.url}/api/v1/apps", timeout=10).status_code
    except httpx.HTTPError as exc:
        return Check("key", WARN, f"{have}; could not check: {type(exc).__name__}", data)
    data["enforced"] = anonymous in (401, 403)
    if not data["enforced"]:
        sent = "sent" if target.key else "none needed"
        return Check("key", OK, f"{have} ({sent}); auth not enforced by this platform yet", data)
    if not target.key:
        return Check(
            "key", FAIL,
            "this platform needs an API key: `tidal profile add NAME --url URL --key KEY`, "
            "or set TIDAL_KEY", data,
        )  # fmt: skip
    try:
        client.get("/api/v1/apps")
    except CLIError:
        return Check("key", FAIL, f"the platform refused the key {have}", data)
    return Check("key", OK, f"{have}: accepted", data)


def check_backends(health: dict[str, Any] | None) -> Check:
    if health is None:
        return Check("backends", WARN, "not checked: no platform")
    backends = health.get("backends") or ([health["backend"]] if health.get("backend") else [])
    unusable: dict[str, str] = {}
    if isinstance(backends, dict):  # {"usable": [...], "unusable": {name: why}}
        unusable = dict(backends.get("unusable") or {})
        backends = list(backends.get("usable") or [])
    if not backends:
        return Check("backends", FAIL, "the platform reports no backend")
    detail = "usable: " + ", ".join(map(str, backends))
    detail += "".join(f"\n{name}: not usable: {why}" for name, why in unusable.items())
    return Check("backends", OK, detail, {"backends": backends, "unusable": unusable})


def check_docker(health: dict[str, Any] | None) -> Check:
    """Whether apps with a container image can run (the docker backend)."""
    if health is None:
        return Check("docker", WARN, "not checked: no platform")
    backends = health.get("backends")
    if not isinstance(backends, dict):
        return Check("docker", WARN, "this platform does not report its backends")
    if "docker" in (backends.get("usable") or []):
        engine = (backends.get("engines") or {}).get("docker") or "a Docker engine"
        return Check("docker", OK, f"{engine} answers: apps with an image run in containers")
    why = (backends.get("unusable") or {}).get("docker", "not enabled on this platform")
    return Check("docker", WARN, f"apps with an image cannot deploy: {why}", {"why": why})


def check_sandbox(health: dict[str, Any] | None) -> Check:
    """Whether local runners run in the sandbox (docs/security.md)."""
    if health is None:
        return Check("sandbox", WARN, "not checked: no platform")
    sandbox = health.get("sandbox")
    if not isinstance(sandbox, dict):
        return Check("sandbox", WARN, "this platform does not report its runner sandbox")
    state, detail = sandbox.get("state"), str(sandbox.get("detail", ""))
    level = {"on": OK, "unused": OK, "off": WARN}.get(str(state), FAIL)
    return Check("sandbox", level, f"{state}: {detail}", dict(sandbox))


def check_clusters(health: dict[str, Any] | None) -> list[Check]:
    """One check per cluster backend (ray): its nodes and their resources."""
    checks = []
    for name, cluster in ((health or {}).get("clusters") or {}).items():
        nodes = [n for n in cluster.get("nodes", []) if n.get("alive")]
        lines = [f"{len(nodes)} node(s) alive, {cluster.get('runners', 0)} runner(s) here"]
        for n in nodes:
            resources = ", ".join(
                f"{k} {v:g}" for k, v in sorted(n.get("resources", {}).items())
                if not k.startswith(("node:", "object_store", "memory"))
            )  # fmt: skip
            labels = ", ".join(f"{k}={v}" for k, v in sorted(n.get("labels", {}).items()))
            lines.append(f"{n['node_id'][:12]} {n['address']}: {resources}"
                         + (f" [{labels}]" if labels else ""))  # fmt: skip
        checks.append(Check(name, OK if nodes else FAIL, "\n".join(lines), cluster))
    return checks


def check_machines(client: Client, reachable: bool) -> Check:
    if not reachable:
        return Check("machines", WARN, "not checked: no platform")
    try:
        machines: dict[str, Any] = client.get("/api/v1/machines")
        types, free, host = machines["machine_types"], machines["free"], machines["host"]
    except (CLIError, KeyError, TypeError) as exc:
        return Check("machines", FAIL, f"GET /api/v1/machines: {exc}")
    if not types:
        return Check("machines", FAIL, "no machine type fits this platform's host", machines)
    fit = [
        t["name"]
        for t in types
        if t["cpus"] <= free["cpus"]
        and t["memory_mb"] <= free["memory_mb"]
        and t["gpus"] <= len(free["gpus"])
    ]
    detail = (
        f"{', '.join(t['name'] for t in types)} in region {machines.get('region')}; "
        f"free: {free['cpus']:g}/{host['cpus']:g} CPUs, "
        f"{_size(free['memory_mb'] * 2**20)}/{_size(host['memory_mb'] * 2**20)} memory, "
        f"{len(free['gpus'])}/{len(host['gpus'])} GPUs"
    )
    if not fit:
        return Check("machines", WARN, f"{detail}; no type fits now: new runners wait", machines)
    return Check("machines", OK, f"{detail}; fit now: {', '.join(fit)}", machines)


def check_disk(target: Target, health: dict[str, Any] | None) -> Check:
    if health is None:
        return Check("disk", WARN, "not checked: no platform")
    data_dir = str(health.get("data_dir") or "")
    free, total = health.get("disk_free_bytes"), health.get("disk_total_bytes")
    if isinstance(free, int | float):
        how = "reported by the platform"
    elif data_dir and Path(data_dir).exists():
        # The platform does not report it, but its data directory is on this machine.
        usage = shutil.disk_usage(data_dir)
        free, total = usage.free, usage.total
        how = "measured by the CLI"
        if httpx.URL(target.url).host not in LOOPBACK:
            how += ", assuming the platform runs on this machine"
    else:
        return Check(
            "disk", WARN,
            f"unknown: the platform does not report it and {data_dir or 'its data directory'} "
            "is not on this machine", {"data_dir": data_dir},
        )  # fmt: skip
    data = {"data_dir": data_dir, "free_bytes": free, "total_bytes": total, "source": how}
    of = f" of {_size(total)}" if isinstance(total, int | float) else ""
    detail = f"{_size(free)} free{of} at {data_dir} ({how})"
    status = FAIL if free < DISK_FAIL_BYTES else WARN if free < DISK_WARN_BYTES else OK
    return Check("disk", status, detail, data)


def find_uv() -> str | None:
    found = shutil.which("uv")
    if found:
        return found
    try:
        return str(importlib.import_module("uv").find_uv_bin())
    except (ImportError, AttributeError, OSError):  # not installed, or no binary
        return None


def uv_pythons(uv: str) -> list[dict[str, str]] | None:
    """`uv python list --only-installed`, one entry per interpreter; None if uv fails."""
    base = [uv, "python", "list", "--only-installed"]
    try:
        done = subprocess.run([*base, "--output-format", "json"], capture_output=True,
                              text=True, timeout=30)  # fmt: skip
        if done.returncode == 0:
            return [
                {"name": e["key"], "version": e["version"], "path": e["path"]}
                for e in json.loads(done.stdout)
            ]
        done = subprocess.run(base, capture_output=True, text=True, timeout=30)  # older uv
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return None
    if done.returncode != 0:
        return None
    out = []
    for line in done.stdout.splitlines():
        name, _, path = line.strip().partition(" ")
        if name and path.strip():
            version = name.split("-")[1] if name.count("-") >= 1 else name
            out.append({"name": name, "version": version, "path": path.strip()})
    return out


def path_pythons() -> list[dict[str, str]]:
    """python3.X executables on PATH that run (pyenv's shims may not), one per binary."""
    seen: set[str] = set()
    out = []
    candidates = [sys.executable]  # this CLI's own, first
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        try:
            names = sorted(os.listdir(folder or "."))
        except OSError:
            continue
        candidates += [os.path.join(folder, n) for n in names if PYTHON_NAME.fullmatch(n)]
    for exe in candidates:
        real = os.path.realpath(exe)
        if real in seen or not os.access(exe, os.X_OK):
            continue
        seen.add(real)
        try:
            done = subprocess.run(
                [exe, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                capture_output=True, text=True, timeout=10,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip():
            version = done.stdout.strip()
            out.append({"name": f"python {version}", "version": version, "path": exe})
    return out


def check_python() -> Check:
    uv = find_uv()
    found = uv_pythons(uv) if uv else None
    how = f"uv ({uv})" if found is not None else "PATH"
    if found is None:
        found = path_pythons()
    data = {"via": how, "interpreters": found, "cli": sys.version.split()[0]}
    if not found:
        return Check("python", WARN, f"no Python interpreter found via {how}", data)
    first: dict[str, dict[str, str]] = {}  # one line per interpreter, at its first path
    for p in found:
        first.setdefault(p["name"], p)
    lines = [f"via {how}, on this machine:"]
    lines += [f"{p['name']}  {p['path']}" for p in first.values()]
    return Check("python", OK, "\n".join(lines), data)


def run_checks(target: Target) -> list[Check]:
    client = Client(target.url, target.key, timeout=10.0, source=target.url_source)
    connection, health = check_connection(target, client)
    reachable = health is not None
    return [
        connection,
        check_key(target, client, reachable),
        check_backends(health),
        check_docker(health),
        check_sandbox(health),
        *check_clusters(health),
        check_machines(client, reachable),
        check_disk(target, health),
        check_python(),
    ]


def run_doctor(url_option: str | None, as_json: bool) -> int:
    """Print the checks; 1 when one failed, else 0."""
    target = resolve(url_option)
    checks = run_checks(target)
    failed = [c for c in checks if c.status == FAIL]
    if as_json:
        report = {"ok": not failed, "url": target.url, "checks": [asdict(c) for c in checks]}
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
        return 1 if failed else 0
    table = Table("check", "status", "detail", title=f"tidal doctor: {target.where}")
    for c in checks:
        symbol, color = SYMBOLS[c.status]
        table.add_row(c.check, Text(symbol, style=color), Text(c.detail))
    console.print(table)
    if failed:
        names = ", ".join(c.check for c in failed)
        console.print(f"[red]✗[/] {len(failed)} check(s) failed: {names}")
    else:
        console.print("[green]✓[/] All checks passed.")
    return 1 if failed else 0


def doctor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Check the platform connection, key, backends, machines, disk, and local Pythons."""
    url_option = ctx.find_root().params.get("url")
    code = run_doctor(url_option if isinstance(url_option, str) else None, as_json)
    if code:
        raise typer.Exit(code)
