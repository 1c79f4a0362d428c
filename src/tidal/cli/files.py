"""`tidal files`: the files in an app's /data, from your shell (fal's files API for /data)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from tidal.cli.client import CLIError, client_for
from tidal.cli.output import out, print_json

files_app = typer.Typer(
    help="List, upload, download and remove the files in an app's /data.",
    no_args_is_help=True,
)

App = Annotated[str, typer.Argument(help="The app whose /data it is.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _url(app: str, content: bool = False) -> str:
    return f"/api/v1/apps/{quote(app, safe='')}/data" + ("/content" if content else "")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@files_app.command("ls")
def ls(
    ctx: typer.Context,
    app: App,
    path: Annotated[str, typer.Argument(help="A folder or file under /data.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """List a folder of /data (folders first), or show one file."""
    with client_for(ctx) as api:
        view: dict[str, Any] = api.get(_url(app), params={"path": path})
    if as_json:
        print_json(view)
        return
    from rich.table import Table

    where = "/data/" + view["path"]
    if not view["entries"]:
        out().print(f"{where} is empty." if view["is_dir"] else f"Nothing at {where}.")
        return
    table = Table("name", "type", "size", "modified", title=where, title_justify="left")
    for e in view["entries"]:
        name = e["name"] + ("/" if e["type"] == "dir" else "")
        size = _size(e["size"]) if e["type"] == "file" else ""
        when = datetime.fromtimestamp(e["modified"]).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(name, e["type"], size, when)
    out().print(table)
    if view["truncated"]:
        out().print("[yellow]The folder has more entries than one listing shows.[/]")
    if view["hidden"]:
        out().print(f"{view['hidden']} hidden (dot) entries not shown.")


@files_app.command("upload")
def upload(
    ctx: typer.Context,
    app: App,
    local: Annotated[Path, typer.Argument(help="The file to upload.")],
    path: Annotated[
        str,
        typer.Argument(
            help="Where in /data (default: its name at the top; a path ending "
            "in / is a folder to put it in)."
        ),
    ] = "",
) -> None:
    """Upload a file into /data, streamed; folders are made as needed."""
    if not local.is_file():
        raise CLIError(f"{local} is not a file (tidal files upload sends one file at a time)")
    target = path or local.name
    if target.endswith("/"):
        target += local.name
    with client_for(ctx) as api, local.open("rb") as body:
        view = api.upload(_url(app, content=True), {"path": target}, body)
    out().print(f"[green]✓[/] {local} → /data/{view['path']} ({_size(view['size'])})")


@files_app.command("download")
def download(
    ctx: typer.Context,
    app: App,
    path: Annotated[str, typer.Argument(help="The file in /data.")],
    local: Annotated[
        str | None,
        typer.Argument(help="Where to write it (default: its name, here; '-' for stdout)."),
    ] = None,
) -> None:
    """Download a file from /data, streamed to disk (or stdout)."""
    with client_for(ctx) as api:
        if local == "-":
            api.download(_url(app, content=True), {"path": path}, sys.stdout.buffer.write)
            sys.stdout.buffer.flush()
            return
        name = path.rstrip("/").rsplit("/", 1)[-1]
        dest = Path(local or name)
        if dest.is_dir():
            dest = dest / name
        # Into a temporary file beside it, renamed once complete: no half file on failure.
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent or ".")
        try:
            with os.fdopen(fd, "wb") as sink:
                size = api.download(_url(app, content=True), {"path": path}, sink.write)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    out().print(f"[green]✓[/] /data/{path.strip('/')} → {dest} ({_size(size)})")


@files_app.command("rm")
def rm(
    ctx: typer.Context,
    app: App,
    path: Annotated[str, typer.Argument(help="The file or folder in /data.")],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Remove a folder and all in it.")
    ] = False,
) -> None:
    """Remove a file, a link, or a folder (with --recursive) from /data."""
    if not path.strip("/"):
        raise CLIError("give a path under /data to remove; /data itself stays")
    with client_for(ctx) as api:
        view = api.delete_with(_url(app), {"path": path, "recursive": recursive})
    out().print(f"Removed /data/{view['path']} ({view['removed']}).")
