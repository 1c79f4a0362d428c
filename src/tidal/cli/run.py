"""`tidal run`: an ephemeral app for the developer's loop, on an embedded platform if need be."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from tidal.cli.client import Client, CLIError
from tidal.cli.deploy import deploy
from tidal.config import DEFAULT_HOST


@contextlib.contextmanager
def embedded_platform(api: Client, console: Console) -> Iterator[Client]:
    """`api` when a platform answers there, else one started for this session (and stopped)."""
    if api.reachable():
        yield api
        return
    data_dir = tempfile.mkdtemp(prefix="tidal-run-")
    from tidal.backends.local import free_port

    port = free_port()
    with console.status("Starting an embedded platform…"):
        with (Path(data_dir) / "platform.log").open("wb") as platform_log:
            platform = subprocess.Popen(
                [sys.executable, "-m", "tidal", "server", "--port", str(port), "--data-dir", data_dir, "--no-auth"],
                stdout=subprocess.DEVNULL, stderr=platform_log,
                start_new_session=True,  # Ctrl-C reaches us; we stop it once
                preexec_fn=_ends_with(os.getpid()),
            )  # fmt: skip
        local = Client(f"http://{DEFAULT_HOST}:{port}")
        try:
            deadline = time.monotonic() + 30
            while not local.reachable():
                if platform.poll() is not None or time.monotonic() > deadline:
                    raise CLIError(
                        f"the embedded platform did not start; see {data_dir}/platform.log"
                    )
                time.sleep(0.1)
        except BaseException:
            _stop(platform, data_dir)
            raise
    try:
        yield local
    finally:
        _stop(platform, data_dir)


def _ends_with(parent: int) -> Callable[[], None] | None:
    """For the embedded platform's child, between fork and exec: it gets SIGTERM (a
    clean stop) when this process dies, even killed with SIGKILL, so it never outlives
    the session (Linux's parent-death signal; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # it died before prctl took effect
            os._exit(1)

    return arm


def stop_on_signals() -> None:
    """Ctrl-C, SIGTERM and a closed terminal all end the session the same way: the app
    removed, the embedded platform stopped. SIGINT's handler is set even where it was
    inherited ignored (a shell starts background jobs so): Ctrl-C is how this command
    is stopped, and a `tidal run` that ignored it would orphan its platform."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)


def _stop(platform: subprocess.Popen[bytes], data_dir: str) -> None:
    platform.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        platform.wait(30)
    if platform.poll() is None:
        platform.kill()
        platform.wait()
    shutil.rmtree(data_dir, ignore_errors=True)


def watched_files(target: str) -> list[Path]:
    """What a reload watches: the Python files the code bundle is made of (the entry's
    folder, as `tidal deploy` bundles it)."""
    from tidal.storage.bundles import python_files

    return python_files(Path(target.partition("::")[0]).resolve().parent)


def signature(files: list[Path]) -> dict[Path, tuple[int, int]]:
    stamps: dict[Path, tuple[int, int]] = {}
    for path in files:
        with contextlib.suppress(OSError):  # deleted between listing and stat
            st = path.stat()
            stamps[path] = (st.st_mtime_ns, st.st_size)
    return stamps


def forget_modules(files: list[Path]) -> None:
    """Drop the user's modules imported from `files`, so a redeploy imports the edits."""
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if origin and Path(origin).resolve() in files:
            del sys.modules[name]


def stream_logs(url: str, key: str | None, app: str) -> None:
    """Print the app's runner logs as they come, new revisions' runners included
    (its own connection: the main thread keeps deploying)."""
    logs = Client(url, key)
    with contextlib.suppress(CLIError):
        for line in logs.stream_lines(f"/api/v1/apps/{app}/logs", {"follow": True, "lines": 0}):
            print(line, flush=True)


def wait_live(api: Client, app: str, revision: int, timeout: float = 120) -> float | None:
    """Seconds until a runner of `revision` is ready; None when none starts (an app with
    no runners starts one on its next request) or it takes longer than `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        runners = api.get(f"/api/v1/apps/{app}/runners")
        mine = [r for r in runners if r["revision"] == revision]
        if any(r["state"] in ("idle", "running") for r in mine):
            return time.monotonic() - started
        if not mine and not any(r["state"] in ("idle", "running", "setup") for r in runners):
            return None
        if mine and all(r["state"] in ("failed", "terminated") for r in mine):
            raise CLIError(f"revision {revision}'s runner failed; see the logs above")
        time.sleep(0.1)
    return None


def reload_loop(
    api: Client, target: str, app_name: str, console: Console, interval: float = 0.3
) -> None:
    """Redeploy on every saved change: a new revision, rolled out ready-first (the old
    runners serve until the new one is ready, then drain), so callers see no failure."""
    folder = Path(target.partition("::")[0]).resolve().parent
    seen = signature(watched_files(target))
    while True:
        time.sleep(interval)
        now = signature(watched_files(target))
        if now == seen:
            continue
        time.sleep(interval)  # an editor's save can be several writes
        now = signature(watched_files(target))
        changed = sorted({*now, *seen} - {p for p in now if now[p] == seen.get(p)})
        seen = now
        names = ", ".join(p.relative_to(folder).as_posix() for p in changed[:3])
        console.print(f"[cyan]↻[/] {names}{' …' if len(changed) > 3 else ''} changed: redeploying")
        started = time.monotonic()
        forget_modules(list(now))
        try:
            view = deploy(api, target, app_name, console)
            live = wait_live(api, app_name, view["revision"])
        except CLIError as exc:  # a broken edit: the running revision keeps serving
            console.print(f"[red]✗[/] {exc}  (still serving the previous revision)")
            continue
        took = time.monotonic() - started
        if live is None:
            console.print(f"[green]✓[/] revision {view['revision']} deployed in {took:.1f}s "
                          "(its first runner starts with the next request)")  # fmt: skip
        else:
            console.print(f"[green]✓[/] revision {view['revision']} live in {took:.1f}s "
                          f"(runner ready {live:.1f}s after the deploy)")  # fmt: skip


def run_app(
    api: Client, target: str, app_name: str | None, console: Console, reload: bool = False
) -> None:
    """Deploy `target`, stream its logs until Ctrl-C (redeploying on changes with
    `reload`), then delete it."""
    stop_on_signals()
    with embedded_platform(api, console) as api:
        view: dict[str, Any] | None = None
        try:
            view = deploy(api, target, app_name, console)
            console.print(
                f"[green]✓[/] Running [bold]{view['name']}[/] at [bold]{view['url']}[/]  (Ctrl-C to stop)"
            )
            if not reload:
                for line in api.stream_lines(
                    f"/api/v1/apps/{view['name']}/logs", {"follow": True, "lines": 0}
                ):
                    print(line, flush=True)
                return
            threading.Thread(
                target=stream_logs, args=(api.url, api.key, view["name"]), daemon=True
            ).start()
            console.print(
                f"Watching {Path(target.partition('::')[0]).resolve().parent} for changes."
            )
            reload_loop(api, target, view["name"], console)
        except KeyboardInterrupt:
            pass
        finally:
            if view is not None:
                with contextlib.suppress(CLIError):
                    api.delete(f"/api/v1/apps/{view['name']}")
                    console.print(f"Removed {view['name']}.")
