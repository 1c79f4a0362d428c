"""Named platforms for the CLI: `tidal profile add|use|list|remove`.

Profiles live in `$TIDAL_CONFIG_DIR/profiles.toml` (default `~/.config/tidal/profiles.toml`),
which holds API keys, so it is written with mode 0600 (its folder 0700)::

    current = "remote"

    [profiles.remote]
    url = "https://tidal.example.com"
    key = "tk_..."

Which platform a command talks to: `--url` > `$TIDAL_URL` > the current profile > the
default URL (see `tidal.cli.client.resolve`).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tidal.cli.client import CLIError, load_httpx, mask_key
from tidal.cli.output import print_json

PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
API_KEY = re.compile(r"[\x21-\x7e]+")

profile_app = typer.Typer(
    help="Named platforms (URL and key) for the CLI: add, use, list, remove.",
    no_args_is_help=True,
)
console = Console()


@dataclass
class Profile:
    name: str
    url: str
    key: str | None = None


@dataclass
class Profiles:
    current: str | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)

    def current_profile(self) -> Profile | None:
        return self.profiles.get(self.current) if self.current else None


def config_dir() -> Path:
    given = os.environ.get("TIDAL_CONFIG_DIR")
    return Path(given).expanduser() if given else Path.home() / ".config" / "tidal"


def profiles_path() -> Path:
    return config_dir() / "profiles.toml"


def normalize_url(url: str) -> str:
    """An http(s) URL without a trailing slash, or a CLIError saying what is wrong."""
    load_httpx()  # here, not at the top: every command reads the profiles
    import httpx

    url = url.strip().rstrip("/")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise CLIError(f"{url!r} is not a platform URL; give one like https://tidal.example.com")
    return url


def load_profiles(path: Path | None = None) -> Profiles:
    path = path or profiles_path()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Profiles()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        # tomllib's messages name the line and column, never the content (keys stay out).
        raise CLIError(f"cannot read the CLI's profiles {path}: {exc}") from None
    table = raw.get("profiles", {})
    current = raw.get("current")
    if not isinstance(table, dict) or not (current is None or isinstance(current, str)):
        raise CLIError(f'{path}: expected `current = "NAME"` and [profiles.NAME] tables')
    profiles: dict[str, Profile] = {}
    for name, entry in table.items():
        url, key = (entry.get("url"), entry.get("key")) if isinstance(entry, dict) else (None, None)
        if not isinstance(url, str) or not (key is None or isinstance(key, str)):
            raise CLIError(f"{path}: profile {name!r} needs a url (and optionally a key) string")
        profiles[name] = Profile(name, url.rstrip("/"), key or None)
    return Profiles(current if current in profiles else None, profiles)


def _toml_string(value: str) -> str:
    """A TOML basic string (json.dumps escapes are TOML's too, apart from DEL)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def dump_profiles(profiles: Profiles) -> str:
    lines = ["# tidal CLI profiles, written by `tidal profile`. Holds API keys: keep it 0600.", ""]
    if profiles.current:
        lines += [f"current = {_toml_string(profiles.current)}", ""]
    for name in sorted(profiles.profiles):
        p = profiles.profiles[name]
        lines += [f"[profiles.{_toml_string(name)}]", f"url = {_toml_string(p.url)}"]
        if p.key:
            lines.append(f"key = {_toml_string(p.key)}")
        lines.append("")
    return "\n".join(lines)


def save_profiles(profiles: Profiles, path: Path | None = None) -> Path:
    """Write atomically; the file is 0600 from its creation, never briefly readable."""
    path = path or profiles_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".profiles-", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
            f.write(dump_profiles(profiles))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def loose_permissions(path: Path | None = None) -> str | None:
    """Why the profiles file is readable by others (it holds keys), or None."""
    path = path or profiles_path()
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if mode & 0o077:
        return f"{path} is mode {mode:04o}; it holds keys: chmod 600 {path}"
    return None


def _check_name(name: str) -> str:
    if not PROFILE_NAME.fullmatch(name):
        raise CLIError(
            f"{name!r} is not a valid profile name: use letters, digits, '-' and '_' (up to 63)"
        )
    return name


def _unknown(name: str, profiles: Profiles) -> CLIError:
    known = ", ".join(sorted(profiles.profiles)) or "none; add one with `tidal profile add`"
    return CLIError(f"no profile named {name!r} (profiles: {known})")


def _env_note() -> str | None:
    if os.environ.get("TIDAL_URL"):
        return "TIDAL_URL is set in this environment: it overrides the current profile's URL"
    return None


@profile_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The profile's name.")],
    url: Annotated[str, typer.Option("--url", help="The platform's URL.")],
    key: Annotated[
        str | None,
        typer.Option("--key", help="The platform's API key; '-' reads it from stdin."),
    ] = None,
) -> None:
    """Add a platform (or replace the profile of that name)."""
    _check_name(name)
    url = normalize_url(url)
    if key == "-":
        key = sys.stdin.readline().strip()
    if key and not API_KEY.fullmatch(key):
        raise CLIError("an API key is printable ASCII without spaces; check what was pasted")
    profiles = load_profiles()
    replaced = name in profiles.profiles
    profiles.profiles[name] = Profile(name, url, key or None)
    path = save_profiles(profiles)
    console.print(
        f"[green]✓[/] {'Replaced' if replaced else 'Added'} profile [bold]{name}[/]: {url}"
        + (f" (key {mask_key(key)})" if key else ""),
        highlight=False,
    )
    if profiles.current != name:
        console.print(f"  Use it with `tidal profile use {name}`.  (saved in {path})")


@profile_app.command("use")
def use(name: Annotated[str, typer.Argument(help="The profile to make current.")]) -> None:
    """Make a profile the current one: later commands talk to its platform."""
    profiles = load_profiles()
    if name not in profiles.profiles:
        raise _unknown(name, profiles)
    profiles.current = name
    save_profiles(profiles)
    console.print(
        f"[green]✓[/] Using [bold]{name}[/] ({profiles.profiles[name].url})", highlight=False
    )
    if note := _env_note():
        console.print(f"  [yellow]note:[/] {note}")


def profile_rows(profiles: Profiles) -> list[dict[str, Any]]:
    return [
        {
            "name": p.name,
            "url": p.url,
            "key": mask_key(p.key) if p.key else None,
            "current": p.name == profiles.current,
        }
        for p in sorted(profiles.profiles.values(), key=lambda p: p.name)
    ]


@profile_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List profiles; the current one is marked with *. Keys are shown masked."""
    profiles = load_profiles()
    rows = profile_rows(profiles)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No profiles. Add one with `tidal profile add NAME --url URL [--key KEY]`.")
        return
    table = Table("", "profile", "url", "key")
    for r in rows:
        table.add_row("*" if r["current"] else "", r["name"], r["url"], r["key"] or "-")
    console.print(table)
    if note := _env_note():
        console.print(f"[yellow]note:[/] {note}")


@profile_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="The profile to remove.")]) -> None:
    """Remove a profile (and its key)."""
    profiles = load_profiles()
    if name not in profiles.profiles:
        raise _unknown(name, profiles)
    del profiles.profiles[name]
    was_current = profiles.current == name
    if was_current:
        profiles.current = None
    save_profiles(profiles)
    console.print(
        f"Removed profile {name}." + (" No profile is current now." if was_current else "")
    )
