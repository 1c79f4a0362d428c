"""`tidal queue`: an app's durable queue (queued, running, oldest wait), and flushing it."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from typer.core import TyperGroup

from tidal.cli.client import client_for
from tidal.cli.output import out, print_json


class ShowByDefault(TyperGroup):
    """`tidal queue APP ...` is `tidal queue show APP ...` (an app named like a command
    needs the `show`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


queue_app = typer.Typer(
    help="Look at an app's queue (queued, running, oldest wait) or flush it.",
    cls=ShowByDefault,
    no_args_is_help=True,
)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


@queue_app.command("show")
def show(
    ctx: typer.Context,
    app: Annotated[str, typer.Argument(help="The app.")],
    first: Annotated[int, typer.Option(help="Waiting requests to list.", min=0, max=1000)] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """`tidal queue APP`: how many requests wait and run, the oldest wait, the next ones."""
    with client_for(ctx) as api:
        view: dict[str, Any] = api.get(f"/api/v1/apps/{quote(app, safe='')}/queue",
                                       params={"first": first})  # fmt: skip
    if as_json:
        print_json(view)
        return
    out().print(
        f"[bold]{app}[/]: {view['queued']} queued, {view['running']} running, "
        f"{view['completed_kept']} results kept; oldest wait "
        f"{_seconds(view['oldest_wait_seconds'])}, longest running "
        f"{_seconds(view['longest_running_seconds'])}"
    )
    if view["waiting"]:
        from rich.table import Table

        table = Table("request", "method", "path", "priority", "attempts", "waited")
        for w in view["waiting"]:
            table.add_row(w["request_id"], w["method"], w["path"], w["priority"],
                          str(w["attempts"]), _seconds(w["waited_seconds"]))  # fmt: skip
        out().print(table)


@queue_app.command("flush")
def flush(ctx: typer.Context, app: Annotated[str, typer.Argument(help="The app.")]) -> None:
    """Cancel every request waiting in the app's queue (running ones finish)."""
    with client_for(ctx) as api:
        view = api.post(f"/api/v1/apps/{quote(app, safe='')}/queue/flush")
    out().print(f"[green]✓[/] {app}: {view['flushed']} waiting request(s) cancelled.")
