"""`tidal`: deploy and run apps, and inspect a platform."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tidal import __version__
from tidal.cli.client import Client, CLIError, connect
from tidal.cli.deploy import deploy as deploy_app
from tidal.cli.doctor import doctor
from tidal.cli.keys import keys_app
from tidal.cli.profiles import profile_app
from tidal.cli.secrets import secrets_app
from tidal.cli.simulate import simulate_app
from tidal.config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ConfigError,
    PlatformConfig,
    default_data_dir,
    load_config,
)
from tidal.machines import MachineConfigError, load_machines

app = typer.Typer(help="tidal: a self-hostable serverless platform for servers and ML apps.",
                  no_args_is_help=True, pretty_exceptions_enable=False)  # fmt: skip
apps_cmd = typer.Typer(help="List, show, scale and delete apps.", no_args_is_help=True)
runners_cmd = typer.Typer(help="List and stop runners.", no_args_is_help=True)
app.add_typer(apps_cmd, name="apps")
app.add_typer(runners_cmd, name="runners")
app.add_typer(simulate_app, name="scale")
app.add_typer(secrets_app, name="secrets")
app.add_typer(keys_app, name="keys")
app.add_typer(profile_app, name="profile")
app.command()(doctor)

console = Console()
err_console = Console(stderr=True)
_state: dict[str, Any] = {"debug": False, "url": None}

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def client() -> Client:
    return connect(_state["url"])


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


@app.callback()
def _global(
    url: Annotated[
        str | None,
        typer.Option(help="Platform URL (default: $TIDAL_URL or the embedded platform's)."),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    _state["url"], _state["debug"] = url, debug


@app.command()
def version() -> None:
    """Print tidal's version."""
    console.print(__version__)


@app.command()
def server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the database, bundles and logs live.")
    ] = None,
    isolation: Annotated[
        str,
        typer.Option(
            help="Network isolation of exposed_port runners: 'auto' (a private network "
            "namespace each, where the host allows) or 'off' (runners share the host's "
            "network, so an exposed_port app runs one runner at most)."
        ),
    ] = "auto",
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="The platform's TOML configuration (default: DATA_DIR/tidal.toml if present): "
            "machine types, host capacity, region, limits.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve https with this PEM certificate (chain); needs --tls-key."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="The private key (PEM) of --tls-cert.")
    ] = None,
    auth: Annotated[
        bool | None,
        typer.Option(
            "--auth/--no-auth",
            help="Require API keys (default: on, or the configuration's `auth`). The first "
            "start with keys on writes an admin key to DATA_DIR/admin.key.",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="TIDAL_DATABASE_URL",
            help="The control plane's database: a postgresql://USER:PASSWORD@HOST/DB URL "
            "(several platforms can share it; needs `pip install 'tidal[postgres]'`). "
            "Default: the configuration's `database_url`, else SQLite in DATA_DIR.",
            show_default=False,
        ),
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            help="Where runners run: local, docker or ray; repeat for several (machine "
            "types pick one through [machine_backends] in the configuration). Default: the "
            "configuration's `backends`, else local plus docker when an engine answers.",
            show_default=False,
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="The Ray cluster of the ray backend, HOST:PORT (default: RAY_ADDRESS, "
            "else the cluster `ray start` runs on this machine).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the embedded platform: control API, gateway and local runners, on one port."""
    from tidal.server import serve

    if isolation not in ("auto", "off"):
        raise CLIError(f"--isolation must be 'auto' or 'off', not {isolation!r}")
    data = (data_dir or default_data_dir()).resolve()
    settings: dict[str, Any] = {"data_dir": data, "host": host, "port": port}
    if isolation == "off":
        settings["isolate_network"] = False
    if tls_cert is not None:
        settings["tls_certfile"] = tls_cert.resolve()
    if tls_key is not None:
        settings["tls_keyfile"] = tls_key.resolve()
    if auth is not None:
        settings["auth"] = auth
    if database_url:
        settings["database_url"] = database_url
    if backend:
        settings["backends"] = list(backend)
    if ray_address:
        settings["ray_address"] = ray_address
    config_path = config_file or (data / "tidal.toml")
    try:
        if config_file or config_path.is_file():
            config = load_config(config_path, **settings)
        else:
            config = PlatformConfig(**settings)
        # Fail on a bad [host] or [machine_types] table now, as one readable line.
        if (config.tls_certfile is None) != (config.tls_keyfile is None):
            raise ConfigError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
        load_machines(config.machines)
    except (ConfigError, MachineConfigError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    console.print(
        f"[bold green]tidal platform[/] on [bold]{config.url}[/]  (data: {config.data_dir})"
    )
    console.print(f"Point the CLI at it with: export TIDAL_URL={config.url}")
    from tidal.control.db import DatabaseError
    from tidal.control.secrets import SecretsKeyError

    try:
        serve(config)
    except (SecretsKeyError, DatabaseError) as exc:  # e.g. a key file others can read
        raise CLIError(str(exc)) from None


@app.command()
def deploy(
    target: Annotated[str, typer.Argument(help="FILE.py::NAME of a @tidal.function.")],
    app_name: Annotated[
        str | None, typer.Option("--app-name", help="Name of the app (default: the function's).")
    ] = None,
    as_json: JsonFlag = False,
    public: Annotated[
        bool, typer.Option("--public", help="Anyone may call the app, without an API key.")
    ] = False,
    local: Annotated[
        bool,
        typer.Option(
            "--local", help="Run on the local backend, ignoring the app's container image."
        ),
    ] = False,
) -> None:
    """Deploy an app (a new revision if it exists) and print its URL."""
    view = deploy_app(
        client(), target, app_name, err_console if as_json else console, public=public,
        local=local,
    )  # fmt: skip
    if as_json:
        print_json(view)
        return
    console.print(
        f"[green]✓[/] Deployed [bold]{view['owner']}/{view['name']}[/] revision {view['revision']}"
    )
    for warning in view.get("warnings", []):
        console.print(f"  [yellow]warning:[/] {warning}")
    for note in view["notes"]:
        console.print(f"  [yellow]note:[/] {note}")
    console.print(f"  URL: [bold]{view['url']}[/]")


@app.command()
def run(
    target: Annotated[str, typer.Argument(help="FILE.py::NAME of a @tidal.function.")],
    app_name: Annotated[str | None, typer.Option("--app-name")] = None,
) -> None:
    """Deploy an ephemeral app, stream its logs, and remove it on Ctrl-C.

    Starts an embedded platform for the session when none answers at TIDAL_URL.
    """
    api = client()
    platform: subprocess.Popen[bytes] | None = None
    data_dir: str | None = None
    if not api.reachable():
        data_dir = tempfile.mkdtemp(prefix="tidal-run-")
        port = _free_port()
        with console.status("Starting an embedded platform…"):
            with (Path(data_dir) / "platform.log").open("wb") as platform_log:
                platform = subprocess.Popen(
                    [sys.executable, "-m", "tidal", "server", "--port", str(port), "--data-dir", data_dir, "--no-auth"],
                    stdout=subprocess.DEVNULL, stderr=platform_log,
                    start_new_session=True,  # Ctrl-C reaches us; we stop it once
                )  # fmt: skip
            api = Client(f"http://{DEFAULT_HOST}:{port}")
            deadline = time.monotonic() + 30
            while not api.reachable():
                if platform.poll() is not None or time.monotonic() > deadline:
                    raise CLIError(
                        f"the embedded platform did not start; see {data_dir}/platform.log"
                    )
                time.sleep(0.1)
    view: dict[str, Any] | None = None
    try:
        view = deploy_app(api, target, app_name, console)
        console.print(
            f"[green]✓[/] Running [bold]{view['name']}[/] at [bold]{view['url']}[/]  (Ctrl-C to stop)"
        )
        for line in api.stream_lines(
            f"/api/v1/apps/{view['name']}/logs", {"follow": True, "lines": 0}
        ):
            print(line, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if view is not None:
            with contextlib.suppress(CLIError):
                api.delete(f"/api/v1/apps/{view['name']}")
                console.print(f"Removed {view['name']}.")
        if platform is not None:
            platform.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                platform.wait(30)
            if platform.poll() is None:
                platform.kill()
            if data_dir:
                shutil.rmtree(data_dir, ignore_errors=True)


def _free_port() -> int:
    from tidal.backends.local import free_port

    return free_port()


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    secs = int(time.time() - ts)
    return (
        f"{secs}s"
        if secs < 120
        else f"{secs // 60}m"
        if secs < 7200
        else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")
    )


@apps_cmd.command("list")
def apps_list(
    as_json: JsonFlag = False,
    limit: Annotated[int, typer.Option(help="Apps per page (1-1000).", min=1, max=1000)] = 100,
    cursor: Annotated[str | None, typer.Option(help="Start after this OWNER/NAME.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every page, not only one.")] = False,
) -> None:
    """List deployed apps, a page at a time."""
    api = client()
    views, after = api.get_page("/api/v1/apps", limit, cursor)
    while every and after is not None:
        more, after = api.get_page("/api/v1/apps", limit, after)
        views += more
    if as_json:
        print_json(views)
        return
    table = Table("app", "revision", "ready", "starting", "waiting", "url", "updated")
    for v in views:
        table.add_row(f"{v['owner']}/{v['name']}", str(v["revision"]), str(v["runners"]["ready"]),
                      str(v["runners"]["starting"]), str(v["waiting"]), v["url"], _ago(v["updated_at"]))  # fmt: skip
    console.print(
        table if views else "No apps deployed. Deploy one with `tidal deploy FILE.py::NAME`."
    )
    if after is not None:
        console.print(f"More apps: `tidal apps list --cursor {after}` (or `--all`).")


@apps_cmd.command("show")
def apps_show(name: str, as_json: JsonFlag = False) -> None:
    """Show an app's options, runners and notes."""
    v = client().get(f"/api/v1/apps/{name}")
    if as_json:
        print_json(v)
        return
    console.print(f"[bold]{v['owner']}/{v['name']}[/]  revision {v['revision']}  {v['entry']}")
    console.print(f"URL: {v['url']}")
    console.print(f"runners: {v['runners']['ready']} ready, {v['runners']['starting']} starting, "
                  f"{v['runners']['draining']} draining; at most {v['max_runners']}")  # fmt: skip
    table = Table("option", "value", title="options")
    for key, value in sorted(v["options"].items()):
        mark = "  (live change)" if key in v["scaling_overrides"] else ""
        table.add_row(key, json.dumps(value) + mark)
    console.print(table)
    if v["endpoints"]:
        console.print("endpoints: " + ", ".join(v["endpoints"]))
    for note in v["notes"]:
        console.print(f"[yellow]note:[/] {note}")


@apps_cmd.command("delete")
def apps_delete(name: str) -> None:
    """Delete an app and stop its runners."""
    client().delete(f"/api/v1/apps/{name}")
    console.print(f"Deleted {name}.")


@apps_cmd.command("restart")
def apps_restart(name: str) -> None:
    """Replace every runner of an app, new ones ready first (e.g. after changing secrets)."""
    v = client().post(f"/api/v1/apps/{name}/restart")
    console.print(f"[green]✓[/] {name}: revision {v['revision']} (same code) is rolling out")


@apps_cmd.command("revisions")
def apps_revisions(name: str, as_json: JsonFlag = False) -> None:
    """List an app's revisions, newest first (roll back with `tidal apps rollback`)."""
    views = client().get(f"/api/v1/apps/{name}/revisions")
    if as_json:
        print_json(views)
        return
    table = Table("revision", "deployed", "bundle", "kind", "")
    for v in views:
        when = datetime.fromtimestamp(v["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(f"r{v['revision']}", when, (v["bundle_digest"] or "")[:12], v["kind"],
                      "[green]current[/]" if v["current"] else "")  # fmt: skip
    console.print(table)


@apps_cmd.command("rollback")
def apps_rollback(name: str, revision: int) -> None:
    """Deploy an earlier revision's code and options again, as a new revision."""
    v = client().post(f"/api/v1/apps/{name}/rollback", json={"revision": revision})
    console.print(
        f"[green]✓[/] {name}: revision {v['revision']} (the code of r{revision}) is rolling out"
    )


@apps_cmd.command("scale")
def apps_scale(
    name: str,
    keep_alive: Annotated[int | None, typer.Option()] = None,
    min_concurrency: Annotated[int | None, typer.Option()] = None,
    max_concurrency: Annotated[int | None, typer.Option()] = None,
    concurrency_buffer: Annotated[int | None, typer.Option()] = None,
    concurrency_buffer_perc: Annotated[int | None, typer.Option()] = None,
    scaling_delay: Annotated[int | None, typer.Option()] = None,
    request_timeout: Annotated[int | None, typer.Option()] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change scaling options of a live app; takes effect at once, no redeploy."""
    changes = {k: v for k, v in {
        "keep_alive": keep_alive, "min_concurrency": min_concurrency,
        "max_concurrency": max_concurrency, "concurrency_buffer": concurrency_buffer,
        "concurrency_buffer_perc": concurrency_buffer_perc, "scaling_delay": scaling_delay,
        "request_timeout": request_timeout,
    }.items() if v is not None}  # fmt: skip
    if not changes:
        raise CLIError("give at least one option to change, e.g. --keep-alive 60")
    v = client().patch(f"/api/v1/apps/{name}/scaling", json=changes)
    if as_json:
        print_json(v)
    else:
        console.print(
            f"[green]✓[/] {name}: " + ", ".join(f"{k}={val}" for k, val in changes.items())
        )


@runners_cmd.command("list")
def runners_list(
    app_name: Annotated[str | None, typer.Argument(help="Only this app's runners.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List runners (live ones and those that ended recently, with why)."""
    views = client().get(f"/api/v1/apps/{app_name}/runners" if app_name else "/api/v1/runners")
    if as_json:
        print_json(views)
        return
    table = Table("runner", "app", "rev", "type", "state", "in flight", "served", "age", "reason")
    colors = {
        "ready": "green",
        "starting": "cyan",
        "draining": "yellow",
        "failed": "red",
        "gone": "dim",
    }
    for r in views:
        state = f"[{colors.get(r['state'], 'white')}]{r['state']}[/]"
        gpus = f" gpu {','.join(r['gpus'])}" if r["gpus"] else ""
        table.add_row(r["id"], r["app"], str(r["revision"]), (r["machine_type"] or "-") + gpus,
                      state, str(r["in_flight"]),
                      str(r["served"]), _ago(r["created_at"]), r["reason"])  # fmt: skip
    console.print(table if views else "No runners.")


@runners_cmd.command("stop")
def runners_stop(runner_id: str) -> None:
    """Stop a runner gracefully."""
    client().post(f"/api/v1/runners/{runner_id}/stop")
    console.print(f"Stopped {runner_id}.")


@app.command()
def logs(
    name: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", help="Lines per runner to show first.")
    ] = 100,
) -> None:
    """Print an app's runner logs."""
    with contextlib.suppress(KeyboardInterrupt):
        for line in client().stream_lines(
            f"/api/v1/apps/{name}/logs", {"follow": follow, "lines": lines}
        ):
            console.print(line, markup=False, highlight=False)


def main() -> None:
    # Standalone mode: typer prints usage errors itself (exit 2); ours are one paragraph.
    try:
        app()
    except CLIError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]Error:[/] {exc}", highlight=False)
        sys.exit(1)
    except Exception as exc:
        if _state["debug"] or os.environ.get("TIDAL_DEBUG"):
            raise
        err_console.print(
            f"[bold red]Error:[/] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            highlight=False,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
