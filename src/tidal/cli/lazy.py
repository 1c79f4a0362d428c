"""Sub-commands whose modules load only when they run, so every command starts fast.

Help is click's plain text (`rich_markup_mode=None`) for every command: Typer's rich help
imports rich.markdown and more, which alone takes longer than the whole `tidal --help`.

`tidal --help` lists them from a one-line summary kept here; running one (or its
`--help`) imports its module. tests/unit/cli/test_startup.py checks that each summary
is the first line of the real command's help.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True)
class LazyCommand:
    module: str
    attribute: str  # a typer.Typer (a group of commands) or a command function
    summary: str


def load_command(name: str, lazy: LazyCommand) -> Any:
    """The click command of `lazy`, imported now."""
    target = getattr(importlib.import_module(lazy.module), lazy.attribute)
    if isinstance(target, typer.Typer):
        command: Any = typer.main.get_group(target)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name=name)(target)
        command = typer.main.get_command(single)
    command.name = name
    plain_help(command)
    return command


def plain_help(command: Any) -> None:
    """Click's plain help for `command` and its sub-commands (see the module's doc)."""
    command.rich_markup_mode = None
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub)


class LazyGroup(TyperGroup):
    """A TyperGroup that also holds `lazy` commands, imported on first use."""

    lazy: dict[str, LazyCommand] = {}
    _listing = False  # while formatting help: summaries only, nothing imported

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in self.lazy if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands or cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        if self._listing:
            return TyperCommand(name=cmd_name, help=self.lazy[cmd_name].summary)
        self.commands[cmd_name] = load_command(cmd_name, self.lazy[cmd_name])
        return self.commands[cmd_name]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def plain_strings_skip_pydantic() -> None:
    """Typer coerces each parameter through a pydantic TypeAdapter, and importing pydantic
    takes longer than the rest of a command's start. A plain `str`, a `bool` flag (which
    click already gives as a bool) and an `int` (with min/max) are coerced here instead.
    Other types, parsers and click types keep Typer's way."""
    try:
        from typer import core
        from typer._click.exceptions import BadParameter
        from typer._coercion import (
            PassThroughRuntimeParam,
            RuntimeParam,
            TypeDescriptor,
            build_runtime_param,
        )
    except ImportError:  # another Typer than the one this was written against: keep its own
        return

    @dataclass(frozen=True)
    class IntParam(RuntimeParam):
        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise BadParameter(f"{value!r} is not a valid integer.", ctx, param) from None
            low, high = self.parameter_info.min, self.parameter_info.max
            if (low is not None and number < low) or (high is not None and number > high):
                if self.parameter_info.clamp:
                    return min(max(number, low if low is not None else number),
                               high if high is not None else number)  # fmt: skip
                where = f"{low}<=x<={high}" if low is not None and high is not None else (
                    f"x>={low}" if low is not None else f"x<={high}"
                )  # fmt: skip
                raise BadParameter(f"{number} is not in the range {where}.", ctx, param)
            return number

    def build(descriptor: TypeDescriptor) -> Any:
        info = descriptor.parameter_info
        plain = (
            descriptor.file_annotation is None
            and getattr(info, "parser", None) is None
            and getattr(info, "click_type", None) is None
        )
        kind = descriptor.annotation
        if plain and (kind is str or (kind is bool and not info.envvar)):
            return PassThroughRuntimeParam(parameter_info=info, annotation=kind)
        if plain and kind is int:
            return IntParam(parameter_info=info, annotation=int)
        return build_runtime_param(descriptor)

    if getattr(core, "build_runtime_param", None) is build_runtime_param:
        setattr(core, "build_runtime_param", build)  # noqa: B010 (not exported: mypy)
