"""`tidal`: deploy and run apps, and inspect a platform."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tidal import __version__
from tidal.cli.client import CLIError
from tidal.cli.lazy import LazyCommand, LazyGroup, plain_strings_skip_pydantic
from tidal.cli.output import err, out, print_json
from tidal.config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ConfigError,
    PlatformConfig,
    default_data_dir,
    load_config,
)

if TYPE_CHECKING:  # each command imports what it uses: `tidal version` loads none of these
    from tidal.cli.client import Client

plain_strings_skip_pydantic()


class RootGroup(LazyGroup):
    lazy = {
        "scale": LazyCommand("tidal.cli.simulate", "simulate_app",
                             "Try scaling options offline: replay a request trace against the autoscaling policy."),
        "secrets": LazyCommand("tidal.cli.secrets", "secrets_app",
                               "Set, list and remove secrets: environment variables for your runners, stored "
                               "encrypted. A change reaches new runners; `tidal apps restart APP` rolls running ones."),
        "keys": LazyCommand("tidal.cli.keys", "keys_app",
                            "Create, list and revoke API keys. Scope `admin` may use the control-plane API "
                            "and call apps; `invoke` may only call apps."),
        "profile": LazyCommand("tidal.cli.profiles", "profile_app",
                               "Named platforms (URL and key) for the CLI: add, use, list, remove."),
        "files": LazyCommand("tidal.cli.files", "files_app",
                             "List, upload, download and remove the files in an app's /data."),
        "queue": LazyCommand("tidal.cli.queue", "queue_app",
                             "Look at an app's queue (queued, running, oldest wait) or flush it."),
        "doctor": LazyCommand("tidal.cli.doctor", "doctor",
                              "Check the platform connection, key, backends, machines, disk, and local Pythons."),
    }  # fmt: skip


app = typer.Typer(help="tidal: a self-hostable serverless platform for servers and ML apps.",
                  cls=RootGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None)  # fmt: skip
apps_cmd = typer.Typer(help="List, show, scale and delete apps.", no_args_is_help=True,
                       rich_markup_mode=None)  # fmt: skip
runners_cmd = typer.Typer(help="List and stop runners.", no_args_is_help=True,
                          rich_markup_mode=None)  # fmt: skip
app.add_typer(apps_cmd, name="apps")
app.add_typer(runners_cmd, name="runners")

_state: dict[str, Any] = {"debug": False, "url": None}


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def client() -> Client:
    from tidal.cli.client import connect

    return connect(_state["url"])


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
    out().print(__version__)


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
            help="Network isolation of exposed_port runners under --sandbox off: 'auto' (a "
            "private network namespace each, where the host allows) or 'off' (runners share "
            "the host's network, so an exposed_port app runs one runner at most). Sandboxed "
            "runners always have their own network namespace."
        ),
    ] = "auto",
    sandbox: Annotated[
        str,
        typer.Option(
            help="The local runners' sandbox: 'on' (each app's code in its own uid, mounts, "
            "PIDs, network and cgroup limits; the platform refuses local runners where it "
            "cannot be built) or 'off' (runners run unconfined with the platform's rights: "
            "only for code you trust).",
        ),
    ] = "on",
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
    from tidal.machines import MachineConfigError, load_machines
    from tidal.server import serve

    if isolation not in ("auto", "off"):
        raise CLIError(f"--isolation must be 'auto' or 'off', not {isolation!r}")
    data = (data_dir or default_data_dir()).resolve()
    settings: dict[str, Any] = {"data_dir": data, "host": host, "port": port}
    if isolation == "off":
        settings["isolate_network"] = False
    if sandbox not in ("on", "off"):
        raise CLIError(f"--sandbox must be 'on' or 'off', not {sandbox!r}")
    if sandbox == "off":
        settings["sandbox"] = False
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
        if config.sandbox and not config.isolate_network:
            raise ConfigError(
                "--isolation off (isolate_network = false) has no effect with the sandbox on: "
                "every sandboxed runner has its own network namespace; to share the host's "
                "network with trusted code, add --sandbox off"
            )
        load_machines(config.machines)
    except (ConfigError, MachineConfigError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    out().print(
        f"[bold green]tidal platform[/] on [bold]{config.url}[/]  (data: {config.data_dir})"
    )
    out().print(f"Point the CLI at it with: export TIDAL_URL={config.url}")
    if not config.sandbox:
        out().print(
            "[bold yellow]sandbox off[/]: local runners run unconfined, with this platform's "
            "rights (its keys, database and other apps are within their reach)"
        )
    from tidal.control.db import DatabaseError
    from tidal.control.secrets import SecretsKeyError

    try:
        serve(config)
    except (SecretsKeyError, DatabaseError) as exc:  # e.g. a key file others can read
        raise CLIError(str(exc)) from None


@app.command()
def deploy(
    target: Annotated[
        str | None,
        typer.Argument(help="FILE.py::NAME of a @tidal.function, tidal.App or tidal.ImageApp."),
    ] = None,
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
    reset_scale: Annotated[
        bool,
        typer.Option(
            "--reset-scale",
            help="Drop live scaling changes (`tidal apps scale`): the code's options apply "
            "again. Without it they carry over to the new revision.",
        ),
    ] = False,
    image: Annotated[
        str | None,
        typer.Option(
            help="An image-only app from this registry image (no FILE::NAME): its "
            "own ENTRYPOINT/CMD serves on --port.",
            show_default=False,
        ),
    ] = None,
    dockerfile: Annotated[
        str | None,
        typer.Option(
            help="An image-only app built from this Dockerfile (its folder is the "
            "build context): its own ENTRYPOINT/CMD serves on --port.",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="The port an image-only app serves on.", show_default=False),
    ] = None,
) -> None:
    """Deploy an app (a new revision if it exists) and print its URL.

    `tidal deploy FILE.py::NAME`, or an image-only app with no Python:
    `tidal deploy --dockerfile Dockerfile --port 8000 --app-name web`.
    """
    from tidal.cli.deploy import deploy as deploy_app
    from tidal.cli.deploy import image_only

    loaded = None
    if image is not None or dockerfile is not None:
        if target is not None:
            raise CLIError("give FILE.py::NAME or --image/--dockerfile, not both")
        loaded = image_only(image, dockerfile, port, app_name)
    elif target is None:
        raise CLIError("give the app to deploy: FILE.py::NAME (or --image/--dockerfile REF "
                       "--port N --app-name NAME for an image-only app)")  # fmt: skip
    elif port is not None:
        raise CLIError("--port is for an image-only app (--image/--dockerfile); a file's "
                       "app sets exposed_port in its code")  # fmt: skip
    view = deploy_app(
        client(), target or "", app_name, err() if as_json else out(), public=public,
        local=local, reset_scale=reset_scale, loaded=loaded,
    )  # fmt: skip
    if as_json:
        print_json(view)
        return
    out().print(
        f"[green]✓[/] Deployed [bold]{view['owner']}/{view['name']}[/] revision {view['revision']}"
    )
    for warning in view.get("warnings", []):
        out().print(f"  [yellow]warning:[/] {warning}")
    for note in view["notes"]:
        out().print(f"  [yellow]note:[/] {note}")
    out().print(f"  URL: [bold]{view['url']}[/]")


@app.command()
def run(
    target: Annotated[str, typer.Argument(help="FILE.py::NAME of a @tidal.function or tidal.App.")],
    app_name: Annotated[str | None, typer.Option("--app-name")] = None,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload",
            help="Redeploy on every saved change to the app's Python files: a new revision, "
            "rolled out ready-first (the old runner serves until the new one is ready), "
            "logs keep streaming, /data is kept.",
        ),
    ] = False,
) -> None:
    """Deploy an ephemeral app, stream its logs, and remove it on Ctrl-C.

    Starts an embedded platform for the session when none answers at TIDAL_URL.
    """
    from tidal.cli.run import run_app

    run_app(client(), target, app_name, out(), reload=reload)


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
    from rich.table import Table

    table = Table("app", "revision", "ready", "starting", "waiting", "url", "updated")
    for v in views:
        table.add_row(f"{v['owner']}/{v['name']}", str(v["revision"]), str(v["runners"]["ready"]),
                      str(v["runners"]["starting"]), str(v["waiting"]), v["url"], _ago(v["updated_at"]))  # fmt: skip
    out().print(
        table if views else "No apps deployed. Deploy one with `tidal deploy FILE.py::NAME`."
    )
    if after is not None:
        out().print(f"More apps: `tidal apps list --cursor {after}` (or `--all`).")


@apps_cmd.command("show")
def apps_show(name: str, as_json: JsonFlag = False) -> None:
    """Show an app's options, runners and notes."""
    v = client().get(f"/api/v1/apps/{name}")
    if as_json:
        print_json(v)
        return
    out().print(f"[bold]{v['owner']}/{v['name']}[/]  revision {v['revision']}  {v['entry']}")
    out().print(f"URL: {v['url']}")
    out().print(f"runners: {v['runners']['ready']} ready, {v['runners']['starting']} starting, "
                  f"{v['runners']['draining']} draining; at most {v['max_runners']}")  # fmt: skip
    from rich.table import Table

    table = Table("option", "value", title="options")
    for key, value in sorted(v["options"].items()):
        mark = "  (live change)" if key in v["scaling_overrides"] else ""
        table.add_row(key, json.dumps(value) + mark)
    out().print(table)
    if limits := v.get("limits"):
        out().print(f"limits: {limits['max_waiting']} sync callers may wait (max_waiting), "
                    f"requests time out after {limits['request_timeout']}s; queue results "
                    f"kept {limits['queue_result_ttl_seconds']:g}s, at most "
                    f"{limits['queue_results_per_app']} for this app (queue_results_per_app)")  # fmt: skip
    if v["endpoints"]:
        out().print("endpoints: " + ", ".join(v["endpoints"]))
    if v.get("sandbox"):
        out().print(f"sandbox: {v['sandbox']}")
    for note in v["notes"]:
        out().print(f"[yellow]note:[/] {note}")


@apps_cmd.command("open")
def apps_open(
    name: str,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the link only; open nothing.")
    ] = False,
) -> None:
    """Open an app's web UI in a browser; for a private app, through a one-time link (a
    minute) that signs this browser in to that app only, never handing it your key."""
    v = client().post(f"/api/v1/apps/{name}/open")
    print(v["url"])
    if not no_browser:
        import webbrowser

        webbrowser.open(v["url"])


@apps_cmd.command("delete")
def apps_delete(name: str) -> None:
    """Delete an app and stop its runners."""
    client().delete(f"/api/v1/apps/{name}")
    out().print(f"Deleted {name}.")


@apps_cmd.command("restart")
def apps_restart(name: str) -> None:
    """Replace every runner of an app, new ones ready first (e.g. after changing secrets)."""
    v = client().post(f"/api/v1/apps/{name}/restart")
    out().print(f"[green]✓[/] {name}: revision {v['revision']} (same code) is rolling out")


@apps_cmd.command("revisions")
def apps_revisions(name: str, as_json: JsonFlag = False) -> None:
    """List an app's revisions, newest first (roll back with `tidal apps rollback`)."""
    views = client().get(f"/api/v1/apps/{name}/revisions")
    if as_json:
        print_json(views)
        return
    from rich.table import Table

    table = Table("revision", "deployed", "bundle", "kind", "")
    for v in views:
        when = datetime.fromtimestamp(v["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(f"r{v['revision']}", when, (v["bundle_digest"] or "")[:12], v["kind"],
                      "[green]current[/]" if v["current"] else "")  # fmt: skip
    out().print(table)


@apps_cmd.command("rollback")
def apps_rollback(name: str, revision: int) -> None:
    """Deploy an earlier revision's code and options again, as a new revision."""
    v = client().post(f"/api/v1/apps/{name}/rollback", json={"revision": revision})
    out().print(
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
    max_waiting: Annotated[int | None, typer.Option()] = None,
    queue_results: Annotated[
        int | None, typer.Option(help="finished queue results the app keeps, newest first")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change scaling options and limits of a live app; takes effect at once, no redeploy."""
    changes = {k: v for k, v in {
        "keep_alive": keep_alive, "min_concurrency": min_concurrency,
        "max_concurrency": max_concurrency, "concurrency_buffer": concurrency_buffer,
        "concurrency_buffer_perc": concurrency_buffer_perc, "scaling_delay": scaling_delay,
        "request_timeout": request_timeout, "max_waiting": max_waiting,
        "queue_results_per_app": queue_results,
    }.items() if v is not None}  # fmt: skip
    if not changes:
        raise CLIError("give at least one option to change, e.g. --keep-alive 60")
    v = client().patch(f"/api/v1/apps/{name}/scaling", json=changes)
    if as_json:
        print_json(v)
    else:
        out().print(f"[green]✓[/] {name}: " + ", ".join(f"{k}={val}" for k, val in changes.items()))


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
    from rich.table import Table

    table = Table("runner", "app", "rev", "type", "state", "in flight", "served", "age", "reason")
    colors = {
        "idle": "green",
        "running": "green",
        "setup": "cyan",
        "docker_pull": "cyan",
        "failure_delay": "yellow",
        "draining": "yellow",
        "terminating": "yellow",
        "failed": "red",
        "terminated": "dim",
    }
    for r in views:
        # fal's names, as fal's CLI shows them.
        state = f"[{colors.get(r['state'], 'white')}]{r['state'].upper()}[/]"
        gpus = f" gpu {','.join(r['gpus'])}" if r["gpus"] else ""
        table.add_row(r["id"], r["app"], str(r["revision"]), (r["machine_type"] or "-") + gpus,
                      state, str(r["in_flight"]),
                      str(r["served"]), _ago(r["created_at"]), r["reason"])  # fmt: skip
    out().print(table if views else "No runners.")


@runners_cmd.command("stop")
def runners_stop(runner_id: str) -> None:
    """Stop a runner gracefully."""
    client().post(f"/api/v1/runners/{runner_id}/stop")
    out().print(f"Stopped {runner_id}.")


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
            out().print(line, markup=False, highlight=False)


def main() -> None:
    # Standalone mode: typer prints usage errors itself (exit 2); ours are one paragraph.
    try:
        app(prog_name="tidal")  # `python -m tidal` too
    except CLIError as exc:
        if _state["debug"]:
            raise
        from rich.markup import escape

        err().print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False)  # [tables] stay
        sys.exit(1)
    except Exception as exc:
        if _state["debug"] or os.environ.get("TIDAL_DEBUG"):
            raise
        from rich.markup import escape

        err().print(
            f"[bold red]Error:[/] {type(exc).__name__}: {escape(str(exc))} "
            "(run with --debug for the traceback)",
            highlight=False,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
