"""`python -m tidal.runtime`: what a backend runs for each runner.

An App's runner (or a plain function's) tells the platform the moment uvicorn
listens: over `--control-fd` where it has one, and with a line on stdout
(tidal.runtime.channel.LISTENING_LINE) that a backend without a socket to the runner
reads from its output (docker); the platform confirms with an HTTP probe, and probes
on a timer for the user's own servers. With `--template` it imports everything, then waits to be claimed by a
runner (tidal.runtime.template). SIGTERM reaches the whole process group, so the
user's server shuts down on its own; this process then exits.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType

from tidal.compat import install_fal_shim
from tidal.runtime.channel import LISTENING_LINE, Channel
from tidal.runtime.template import Claim
from tidal.sdk.loader import load_entry


def _stop_with_platform() -> None:
    """If the platform dies without stopping this runner (killed, crashed), stop the
    whole runner: the user's server included, gracefully first."""
    if not sys.platform.startswith("linux"):
        return

    def on_platform_gone(signum: int = 0, frame: FrameType | None = None) -> None:
        os.killpg(os.getpgrp(), signal.SIGTERM)
        last_resort = threading.Timer(5.0, os.killpg, (os.getpgrp(), signal.SIGKILL))
        last_resort.daemon = True  # if everything exits in time, so do we
        last_resort.start()

    signal.signal(signal.SIGHUP, on_platform_gone)
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGHUP)
    expected = os.environ.get("TIDAL_PLATFORM_PID")
    if expected and os.getppid() != int(expected):  # it died before prctl took effect
        on_platform_gone()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tidal.runtime")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--entry", required=True)
    parser.add_argument("--port", type=int, help="required unless --template")
    # An App's server listens here: loopback, unless the gateway is on another machine (ray).
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--isolate-network", action="store_true")
    parser.add_argument("--data-dir", type=Path, help="the platform's persistent /data")
    parser.add_argument(
        "--control-fd", type=int, help="the platform's socket (tidal.runtime.channel)"
    )
    parser.add_argument("--template", action="store_true", help="wait for a runner to claim it")
    args = parser.parse_args(argv)
    if args.port is None and not args.template:
        parser.error("--port is required (unless --template)")
    if args.template and args.control_fd is None:
        parser.error("--template needs --control-fd")
    channel = Channel(args.control_fd) if args.control_fd is not None else None

    stopping = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    _stop_with_platform()

    if args.data_dir is not None:
        from tidal.runtime.data_mount import mount_data

        problem = mount_data(args.data_dir)
        if problem:
            print(f"tidal runtime: /data not mounted ({problem}); use $TIDAL_DATA_DIR", flush=True)

    if args.isolate_network:
        from tidal.netns import unshare_network

        unshare_network()

    print(f"tidal runtime: loading {args.entry}", flush=True)
    try:
        install_fal_shim()  # user code written for fal runs unchanged
        module, target = load_entry(args.bundle, args.entry)
        # An App subclass means the user's code imported tidal.sdk.app; don't import it
        # otherwise (cold-start time).
        app_module = sys.modules.get("tidal.sdk.app")
        from tidal.sdk.function import Function

        is_app = bool(
            app_module and isinstance(target, type) and issubclass(target, app_module.App)
        )
        if not is_app and not isinstance(target, Function):
            raise TypeError(f"{args.entry} is neither a @tidal.function nor a tidal.App")
        prepared = None
        if is_app:
            from tidal.runtime.app_server import prepare_app, serve_app

            prepared = prepare_app(target, args.host) if args.template else None
        if args.template:
            assert channel is not None
            claim = _become_runner(channel)
            if claim is None:
                return
            args.port, args.host = claim.port, claim.host
            if args.data_dir is not None:  # set by mount_data, before the claim's environment
                os.environ["TIDAL_DATA_DIR"] = str(args.data_dir)
        where = f"{args.host}:{args.port}"
        if is_app:
            serve_app(
                target, args.port, args.host, prepared, lambda: _say_listening(channel, where)
            )
            return
        if target.is_plain():  # called from the caller's own script, one call per request
            from tidal.runtime.function_server import serve_function

            serve_function(target, args.port, args.host, lambda: _say_listening(channel, where))
            return
        setup = target.raw_options.get("setup_function")
        if setup:
            getattr(module, setup)()
        target.func()
    except BaseException as exc:
        if stopping.is_set():
            sys.exit(0)
        traceback.print_exc()
        print(f"tidal runtime: {args.entry} failed: {type(exc).__name__}: {exc}", flush=True)
        sys.exit(1)
    if stopping.is_set():
        return
    # The body returned but may have left its server running in the background.
    print(f"tidal runtime: {args.entry} returned; serving until stopped", flush=True)
    while not stopping.wait(1.0):
        pass


def _say_listening(channel: Channel | None, where: str) -> None:
    """Over the control line where there is one; on stdout always (a container's
    platform reads it from the container's log stream)."""
    if channel is not None:
        channel.send({"listening": True})
    print(f"{LISTENING_LINE}{where}", flush=True)


def _become_runner(channel: Channel) -> Claim | None:
    """As a template: say whether it may be used, then wait for the runner it becomes."""
    from tidal.runtime import template

    unsafe = template.unsafe_reason()
    if unsafe:
        channel.send({"unsafe": unsafe})
        return None
    channel.send({"template_ready": True, "rss_kib": template.resident_kib()})
    # Nothing to finish while waiting: a SIGTERM (the platform gone) ends it at once.
    on_sigterm = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    claim = template.wait_for_claim(channel)
    signal.signal(signal.SIGTERM, on_sigterm)
    if claim is not None:
        print(f"tidal runtime: started from a template (imports done ahead); port {claim.port}",
              flush=True)  # fmt: skip
    return claim
