"""A deliberately hostile app: each attempt tries one way out of its sandbox and
reports what happened. The tests say what to try (paths, pids, ports)."""

from __future__ import annotations

import ctypes
import os
import socket
import time
from pathlib import Path

from pydantic import BaseModel

import tidal


class Attempt(BaseModel):
    action: str
    path: str = ""
    pid: int = 0
    host: str = ""
    port: int = 0
    count: int = 0


class Outcome(BaseModel):
    ok: bool  # the attempt succeeded: the sandbox did not stop it
    detail: str = ""
    number: float = 0.0


def _fails(exc: BaseException) -> Outcome:
    return Outcome(ok=False, detail=f"{type(exc).__name__}: {exc}")


def _read(a: Attempt) -> Outcome:
    data = Path(a.path).read_bytes()
    return Outcome(ok=True, detail=data[:64].hex())


def _write(a: Attempt) -> Outcome:
    Path(a.path).write_text("owned by a hostile app\n")
    return Outcome(ok=True, detail=a.path)


def _listdir(a: Attempt) -> Outcome:
    return Outcome(ok=True, detail=",".join(sorted(os.listdir(a.path))))


def _environ(a: Attempt) -> Outcome:
    return Outcome(ok=True, detail="\n".join(f"{k}={v}" for k, v in sorted(os.environ.items())))


def _signal(a: Attempt) -> Outcome:
    os.kill(a.pid, 0)  # "is it there, and may I signal it?"
    return Outcome(ok=True, detail=f"may signal {a.pid}")


def _setns(a: Attempt) -> Outcome:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(a.path, os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:
            err = ctypes.get_errno()
            return Outcome(ok=False, detail=f"setns: {os.strerror(err)}")
    finally:
        os.close(fd)
    with socket.create_connection((a.host, a.port), timeout=3):
        return Outcome(ok=True, detail=f"in {a.path}, connected to {a.host}:{a.port}")


def _connect(a: Attempt) -> Outcome:
    with socket.create_connection((a.host, a.port), timeout=3) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        reply = sock.recv(64)
    return Outcome(ok=True, detail=reply.decode("latin-1"))


def _gateway(a: Attempt) -> Outcome:
    """The address of the host's end of this runner's way out (its default route)."""
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            return Outcome(
                ok=True, detail=socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
            )
    return Outcome(ok=False, detail="no default route")


def _whoami(a: Attempt) -> Outcome:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    uid = status["Uid"].split()[0]
    return Outcome(
        ok=True, detail=f"{uid} {status['CapEff'].strip()} {status['NoNewPrivs'].strip()}"
    )


def _hog(a: Attempt) -> Outcome:
    hoard = []
    for _ in range(a.count):  # MiB
        hoard.append(b"x" * (1024 * 1024))
    return Outcome(ok=True, detail=f"held {len(hoard)} MiB")


def _forkbomb(a: Attempt) -> Outcome:
    """Fork until refused (at most `count`); the children wait for a pipe to close."""
    read_end, write_end = os.pipe()
    children, refused = [], ""
    for _ in range(a.count):
        try:
            pid = os.fork()
        except OSError as exc:
            refused = str(exc)
            break
        if pid == 0:
            os.close(write_end)
            os.read(read_end, 1)
            os._exit(0)
        children.append(pid)
    os.close(write_end)
    os.close(read_end)
    for pid in children:
        os.waitpid(pid, 0)
    return Outcome(ok=not refused, detail=refused, number=len(children))


def _cpu(a: Attempt) -> Outcome:
    """Burn `count` processes for `pid` ms of wall time; the CPU time they got / wall."""
    wall = a.pid / 1000
    started = time.monotonic()
    children = []
    for _ in range(a.count):
        pid = os.fork()
        if pid == 0:
            while time.monotonic() - started < wall:
                pass
            os._exit(0)
        children.append(pid)
    used = 0.0
    for pid in children:
        _, _, usage = os.wait4(pid, 0)
        used += usage.ru_utime + usage.ru_stime
    return Outcome(ok=True, number=used / (time.monotonic() - started))


ACTIONS = {
    "read": _read, "write": _write, "listdir": _listdir, "environ": _environ,
    "signal": _signal, "setns": _setns, "connect": _connect, "gateway": _gateway,
    "hog": _hog, "whoami": _whoami,
    "cwd": lambda a: Outcome(ok=True, detail=os.getcwd()), "forkbomb": _forkbomb, "cpu": _cpu,
}  # fmt: skip


def attempt(a: Attempt) -> Outcome:
    try:
        return ACTIONS[a.action](a)
    except OSError as exc:
        return _fails(exc)


class Hostile(tidal.App, keep_alive=300):
    machine_type = "XS"

    @tidal.endpoint("/try")
    def try_(self, a: Attempt) -> Outcome:
        return attempt(a)


class Online(tidal.App, keep_alive=300):
    machine_type = "XS"
    egress = "internet"

    @tidal.endpoint("/try")
    def try_(self, a: Attempt) -> Outcome:
        return attempt(a)


class Neighbor(tidal.App, keep_alive=300):
    machine_type = "XS"

    @tidal.endpoint("/hello")
    def hello(self) -> dict[str, str]:
        return {"hello": "neighbor"}
