"""`tidal scale simulate`: try scaling options on a request trace before deploying them."""

from __future__ import annotations

import difflib
import itertools
import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from tidal.scaling.simulate import (
    DEFAULT_COLD_START,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_WAITING,
    DEFAULT_TICK,
    SimResult,
    Trace,
    TraceError,
    parse_trace,
    simulate,
)
from tidal.spec import AppOptions, InvalidOptionError, ScalingOptions, build_options

simulate_app = typer.Typer(
    help="Try scaling options offline: replay a request trace against the autoscaling policy.",
    no_args_is_help=True,
)

_DEFAULTS = AppOptions()
# What --sweep can vary: every scaling option, max_multiplexing, and the cold-start model.
OPTION_ORDER = (*ScalingOptions.model_fields, "max_multiplexing")
SWEEPABLE = (*OPTION_ORDER, "cold_start")
_NULLABLE = frozenset({"max_concurrency", "request_timeout"})


def _sweep_value(name: str, text: str) -> Any:
    if name == "cold_start":
        try:
            value = float(text)
        except ValueError:
            raise typer.BadParameter(
                f"cold_start={text!r} is not a number of seconds", param_hint="--sweep"
            ) from None
        if not (math.isfinite(value) and value >= 0):
            raise typer.BadParameter(
                f"cold_start={text!r} must be a number of seconds >= 0", param_hint="--sweep"
            )
        return value
    if name in _NULLABLE and text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        return text  # tidal.spec says why it is not valid, as it does for the SDK


def parse_sweeps(sweeps: list[str]) -> list[tuple[str, list[Any]]]:
    """`name=v1,v2,...` each; names as the SDK's options (dashes allowed)."""
    parsed: list[tuple[str, list[Any]]] = []
    for sweep in sweeps:
        name, sep, values = sweep.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise typer.BadParameter(
                f"{sweep!r} should be NAME=V1,V2,... e.g. keep_alive=0,60,300",
                param_hint="--sweep",
            )
        if name not in SWEEPABLE:
            close = difflib.get_close_matches(name, SWEEPABLE, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise typer.BadParameter(
                f"{name!r} cannot be swept.{hint} Choose one of {', '.join(SWEEPABLE)}.",
                param_hint="--sweep",
            )
        if any(name == seen for seen, _ in parsed):
            raise typer.BadParameter(
                f"{name} is swept twice; give all its values in one --sweep {name}=V1,V2,...",
                param_hint="--sweep",
            )
        texts = [v.strip() for v in values.split(",")]
        if not all(texts):
            raise typer.BadParameter(f"{sweep!r} has an empty value", param_hint="--sweep")
        parsed.append((name, [_sweep_value(name, text) for text in texts]))
    return parsed


def _label(combo: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in combo.items())


def _validate(given: dict[str, Any], combo: dict[str, Any]) -> AppOptions:
    try:
        return build_options(given)
    except InvalidOptionError as exc:
        if combo:
            raise typer.BadParameter(f"with {_label(combo)}: {exc}", param_hint="--sweep") from None
        raise typer.BadParameter(str(exc)) from None


def _read_trace(path: Path) -> Trace:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return parse_trace(f)
    except (TraceError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="--trace") from None
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {path}: {exc.strerror or exc}", param_hint="--trace"
        ) from None


def _options_view(options: AppOptions, cold_start: float) -> dict[str, Any]:
    view: dict[str, Any] = {name: getattr(options, name) for name in OPTION_ORDER}
    view["max_concurrency"] = options.max_concurrency or DEFAULT_MAX_CONCURRENCY
    view["cold_start"] = cold_start
    return view


def _seconds(value: float) -> str:
    return f"{value:,.2f}"


@simulate_app.command("simulate")
def simulate_cmd(
    trace: Annotated[
        Path,
        typer.Option(
            "--trace",
            help="CSV of requests, one a row: arrival (seconds from the start) and duration "
            "(seconds of service); a header row 'arrival,duration' is optional.",
            dir_okay=False,
        ),
    ],
    keep_alive: Annotated[
        int, typer.Option(help="Seconds an idle runner stays up.")
    ] = _DEFAULTS.keep_alive,
    min_concurrency: Annotated[
        int, typer.Option(help="Runners kept up even with no requests.")
    ] = _DEFAULTS.min_concurrency,
    max_concurrency: Annotated[
        int | None,
        typer.Option(
            help=f"Most runners at once. (default: the platform's, {DEFAULT_MAX_CONCURRENCY})",
            show_default=False,
        ),
    ] = None,
    concurrency_buffer: Annotated[
        int, typer.Option(help="Extra runners kept beyond the load.")
    ] = _DEFAULTS.concurrency_buffer,
    concurrency_buffer_perc: Annotated[
        int, typer.Option(help="Extra runners as a percentage of those the load needs.")
    ] = _DEFAULTS.concurrency_buffer_perc,
    scaling_delay: Annotated[
        int, typer.Option(help="Seconds a request waits before it asks for another runner.")
    ] = _DEFAULTS.scaling_delay,
    max_multiplexing: Annotated[
        int, typer.Option(help="Requests one runner serves at once.")
    ] = _DEFAULTS.max_multiplexing,
    request_timeout: Annotated[
        int | None,
        typer.Option(help="Seconds (waiting + running) before a request is answered 504."),
    ] = None,
    cold_start: Annotated[
        float, typer.Option(help="Seconds from starting a runner until it takes requests.", min=0)
    ] = DEFAULT_COLD_START,
    tick: Annotated[
        float, typer.Option(help="Seconds between the controller's periodic looks.")
    ] = DEFAULT_TICK,
    max_waiting: Annotated[
        int,
        typer.Option(help="Waiting requests per app before more are rejected (429).", min=1),
    ] = DEFAULT_MAX_WAITING,
    sweep: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=V1,V2,...",
            help="Try several values of one option, e.g. keep_alive=0,60,300 (repeat for a "
            "grid): one row per combination.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Replay a request trace against the autoscaling controller in virtual time.

    Prints what the options would cost (runner-seconds, from each runner's start to its
    stop) and how requests would fare (cold starts, queue waits, timeouts). The
    platform's own controller and router make every decision (no runner process
    starts); the app is deployed at t=0.
    """
    if not (math.isfinite(tick) and tick > 0):
        raise typer.BadParameter(f"{tick} is not a number of seconds > 0", param_hint="--tick")
    if not math.isfinite(cold_start):
        raise typer.BadParameter(
            f"{cold_start} is not a number of seconds", param_hint="--cold-start"
        )
    sweeps = parse_sweeps(sweep or [])
    swept = {name for name, _ in sweeps}
    flags: dict[str, Any] = {
        "keep_alive": keep_alive, "min_concurrency": min_concurrency,
        "max_concurrency": max_concurrency, "concurrency_buffer": concurrency_buffer,
        "concurrency_buffer_perc": concurrency_buffer_perc, "scaling_delay": scaling_delay,
        "request_timeout": request_timeout, "max_multiplexing": max_multiplexing,
    }  # fmt: skip
    given = {k: v for k, v in flags.items() if v is not None}
    base = _validate({k: v for k, v in given.items() if k not in swept}, {})

    runs: list[tuple[dict[str, Any], AppOptions, float]] = []
    for values in itertools.product(*(vals for _, vals in sweeps)):
        combo = dict(zip((name for name, _ in sweeps), values, strict=True))
        chosen = {**given, **{k: v for k, v in combo.items() if k != "cold_start"}}
        chosen = {k: v for k, v in chosen.items() if v is not None}
        runs.append((combo, _validate(chosen, combo), combo.get("cold_start", cold_start)))

    requests = _read_trace(trace)
    results: list[tuple[dict[str, Any], AppOptions, float, SimResult]] = [
        (combo, options, cs, simulate(requests, options, cold_start=cs, tick=tick,
                                      max_waiting=max_waiting))
        for combo, options, cs in runs
    ]  # fmt: skip

    if as_json:
        doc = {
            "trace": {
                "path": str(trace),
                "requests": len(requests),
                "first_arrival": requests.arrivals[0],
                "last_arrival": requests.arrivals[-1],
            },
            "tick": tick,
            "max_waiting": max_waiting,
            "swept": [name for name, _ in sweeps],
            "results": [
                {"options": _options_view(options, cs), **result.as_dict()}
                for _, options, cs, result in results
            ],
        }
        print(json.dumps(doc, indent=2))
        return

    console = Console()
    fixed = {k: v for k, v in _options_view(base, cold_start).items() if k not in swept}
    if "request_timeout" not in given and "request_timeout" not in swept:
        fixed.pop("request_timeout")
    console.print(
        f"{len(requests):,} requests arriving from {requests.arrivals[0]:,.2f}s to "
        f"{requests.arrivals[-1]:,.2f}s; tick {tick}s",
        highlight=False,
    )
    console.print(" ".join(f"{k}={v}" for k, v in fixed.items()), highlight=False)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name, _ in sweeps:
        table.add_column(name, justify="right", style="bold")
    for column in ("runner-s", "cold\nstarts", "cold-start\nwaits", "wait\np50", "wait\np99",
                   "wait\nmax", "peak\nrunners"):  # fmt: skip
        table.add_column(column, justify="right")
    timeouts = any(options.request_timeout is not None for _, options, _, _ in results)
    rejections = any(result.rejected for *_, result in results)
    if timeouts:
        table.add_column("timed\nout", justify="right")
    if rejections:
        table.add_column("rejected\n(queue full)", justify="right")
    for combo, _, _, r in results:
        row = ["none" if v is None else str(v) for v in combo.values()]
        row += [
            f"{r.runner_seconds:,.1f}",
            f"{r.cold_starts:,}",
            f"{r.cold_start_waits:,}",
            _seconds(r.wait_p50),
            _seconds(r.wait_p99),
            _seconds(r.wait_max),
            str(r.peak_runners),
        ]
        if timeouts:
            row.append(f"{r.timed_out:,}")
        if rejections:
            row.append(f"{r.rejected:,}")
        table.add_row(*row)
    # Wider than the terminal, if need be, rather than numbers cut short.
    needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
    Console(width=max(console.width, needed)).print(table)
    console.print(
        "runner-s: runner-seconds, each runner from its start to its stop. cold-start waits: "
        "requests that waited for a runner to start. waits: seconds from arrival until a "
        "runner took the request.",
        style="dim",
        highlight=False,
    )
