"""`tidal keys`: API keys for the platform (`admin`: the control plane and apps;
`invoke`: apps only). A key's secret is shown once, when it is created."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from tidal.cli.client import CLIError, client_for
from tidal.cli.output import print_json

keys_app = typer.Typer(
    help="Create, list and revoke API keys. Scope `admin` may use the control-plane API "
    "and call apps; `invoke` may only call apps.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    scope: Annotated[
        str, typer.Option(help="'invoke' (call apps) or 'admin' (also the control plane).")
    ] = "invoke",
    name: Annotated[
        str | None, typer.Option(help="A label to tell keys apart in `tidal keys list`.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Create a key and print it (`<id>:<secret>`) once: it cannot be shown again."""
    if scope not in ("invoke", "admin"):
        raise CLIError(f"--scope must be 'invoke' or 'admin', not {scope!r}")
    with client_for(ctx) as api:
        view = api.post("/api/v1/keys", json={"scope": scope, "name": name})
    if as_json:
        print_json(view)
        return
    label = f" ({view['name']})" if view.get("name") else ""
    err_console.print(
        f"[green]✓[/] Created {view['scope']} key [bold]{view['id']}[/]{label}. This is the "
        "only time it is shown: store it now (e.g. `export TIDAL_KEY=...`)."
    )
    # The key alone on standard output, so that `KEY=$(tidal keys create)` works.
    print(view["key"], flush=True)


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List keys: id, name, scope, created, last used (secrets are never shown)."""
    with client_for(ctx) as api:
        views = api.get("/api/v1/keys")
    if as_json:
        print_json(views)
        return
    if not views:
        console.print("No API keys. Create one with `tidal keys create`.")
        return
    table = Table("id", "name", "scope", "created", "last used")
    for v in views:
        table.add_row(
            v["id"], v["name"] or "-", v["scope"], _when(v["created_at"]), _when(v["last_used_at"])
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Revoke a key by its id (`tk_...`): requests with it are refused from now on."""
    key_id = key_id.partition(":")[0]  # a whole key pasted by mistake: only its id is sent
    with client_for(ctx) as api:
        api.delete(f"/api/v1/keys/{quote(key_id, safe='')}")
    console.print(f"[green]✓[/] Revoked key [bold]{key_id}[/]")


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "never"
