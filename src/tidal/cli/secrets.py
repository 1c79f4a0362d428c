"""`tidal secrets`: environment variables for your runners, kept encrypted by the platform."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from tidal.cli.client import CLIError, client_for
from tidal.cli.output import print_json

secrets_app = typer.Typer(
    help="Set, list and remove secrets: environment variables for your runners, stored "
    "encrypted. A change reaches new runners; `tidal apps restart APP` rolls running ones.",
    no_args_is_help=True,
)
console = Console()


def _path(name: str) -> str:
    return f"/api/v1/secrets/{quote(name, safe='')}"


def _read_value(name: str, source: str) -> str:
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise CLIError(f"cannot read the value of {name} from {source}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CLIError(
            f"{source} is not UTF-8 text, and an environment variable holds text; "
            "encode binary data first (e.g. `base64 FILE > FILE.b64`)"
        ) from None


def _assignments(args: list[str], from_file: str | None) -> list[tuple[str, str]]:
    if from_file is not None:
        if len(args) != 1 or "=" in args[0]:
            raise CLIError(
                "with --from-file, give exactly one NAME (no =VALUE): "
                "`tidal secrets set NAME --from-file PATH`"
            )
        return [(args[0], _read_value(args[0], from_file))]
    pairs = []
    for arg in args:
        name, eq, value = arg.partition("=")
        if not eq:
            raise CLIError(
                f"{arg!r} has no value: write NAME=VALUE, or "
                f"`tidal secrets set {arg} --from-file PATH` to read it from a file"
            )
        pairs.append((name, value))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise CLIError("each secret name may appear once per command")
    return pairs


@secrets_app.command("set")
def secrets_set(
    ctx: typer.Context,
    assignments: Annotated[
        list[str],
        typer.Argument(
            help="NAME=VALUE pairs (or one NAME with --from-file). Values on the command line "
            "end up in your shell's history: prefer --from-file for real credentials.",
            metavar="NAME=VALUE",
            show_default=False,
        ),
    ],
    from_file: Annotated[
        str | None,
        typer.Option(
            "--from-file",
            metavar="PATH",
            help="Read the value of NAME from this file, byte for byte ('-': standard input).",
        ),
    ] = None,
) -> None:
    """Create or replace secrets (names: A-Z, 0-9 and _, not starting with a digit or TIDAL_)."""
    from tidal.control.secrets import SecretError, check_name, encode_value

    pairs = _assignments(assignments, from_file)
    # All checked before any is sent: a bad one leaves the others unchanged.
    try:
        for name, value in pairs:
            check_name(name)
            encode_value(name, value)
    except SecretError as exc:
        raise CLIError(str(exc)) from None
    with client_for(ctx) as api:
        for name, value in pairs:
            api.put(_path(name), json={"value": value})
            console.print(f"[green]✓[/] Set secret [bold]{name}[/]")
    console.print(
        "New runners get it; running ones keep their value until replaced "
        "(`tidal apps restart APP` rolls them now)."
    )


@secrets_app.command("list")
def secrets_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List secret names and when they changed (values are never shown)."""
    with client_for(ctx) as api:
        views = api.get("/api/v1/secrets")
    if as_json:
        print_json(views)
        return
    if not views:
        console.print("No secrets. Set one with `tidal secrets set NAME=VALUE`.")
        return
    table = Table("name", "updated", "created")
    for v in views:
        table.add_row(v["name"], _when(v["updated_at"]), _when(v["created_at"]))
    console.print(table)


@secrets_app.command("unset")
def secrets_unset(ctx: typer.Context, name: str) -> None:
    """Remove a secret. New runners no longer get it."""
    with client_for(ctx) as api:
        api.delete(_path(name))
    console.print(f"[green]✓[/] Removed secret [bold]{name}[/]")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
