"""CLI profiles: the TOML file, its permissions, which URL and key a command uses."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tidal.cli import doctor
from tidal.cli.client import Client, CLIError, mask_key, resolve, resolve_target
from tidal.cli.profiles import (
    Profile,
    Profiles,
    dump_profiles,
    load_profiles,
    loose_permissions,
    profile_app,
    profiles_path,
    save_profiles,
)
from tidal.config import DEFAULT_URL

KEY = "tk_0123456789abcdefABCD"


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "config"
    monkeypatch.setenv("TIDAL_CONFIG_DIR", str(folder))
    for name in ("TIDAL_URL", "TIDAL_KEY"):
        monkeypatch.delenv(name, raising=False)
    yield folder


def cli(*args: str, input: str | None = None) -> str:
    result = CliRunner().invoke(profile_app, list(args), input=input, env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def test_add_use_list_remove(config_dir: Path) -> None:
    assert "No profiles" in cli("list")
    assert json.loads(cli("list", "--json")) == []
    out = cli("add", "remote", "--url", "https://tidal.example.com/", "--key", KEY)
    assert "Added profile remote" in out and "tidal profile use remote" in out
    assert KEY not in out and "tk_…ABCD" in out
    cli("add", "local", "--url", "http://127.0.0.1:8787")
    assert load_profiles().current is None  # adding does not switch
    assert "Using remote" in cli("use", "remote")
    rows = json.loads(cli("list", "--json"))
    assert rows == [
        {"name": "local", "url": "http://127.0.0.1:8787", "key": None, "current": False},
        {"name": "remote", "url": "https://tidal.example.com", "key": "tk_…ABCD", "current": True},
    ]
    human = cli("list")
    assert KEY not in human
    line = next(line for line in human.splitlines() if "remote" in line)
    assert "*" in line and "tk_…ABCD" in line
    assert "*" not in next(line for line in human.splitlines() if "local" in line)
    # The file is plain TOML a person can read.
    raw = tomllib.loads((config_dir / "profiles.toml").read_text())
    assert raw["current"] == "remote"
    assert raw["profiles"]["remote"] == {"url": "https://tidal.example.com", "key": KEY}
    assert "Replaced profile local" in cli("add", "local", "--url", "http://10.0.0.2:8787")
    assert load_profiles().profiles["local"].url == "http://10.0.0.2:8787"
    assert "No profile is current" in cli("remove", "remote")
    profiles = load_profiles()
    assert profiles.current is None and list(profiles.profiles) == ["local"]
    cli("remove", "local")
    assert load_profiles() == Profiles()


def test_key_from_stdin() -> None:
    cli("add", "remote", "--url", "https://x.example", "--key", "-", input=KEY + "\n")
    assert load_profiles().profiles["remote"].key == KEY


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "bad name", "--url", "http://x"], "not a valid profile name"),
        (["add", "a\n", "--url", "http://x"], "not a valid profile name"),
        (["add", "p", "--url", "ftp://x"], "not a platform URL"),
        (["add", "p", "--url", "example.com"], "not a platform URL"),
        (["add", "p", "--url", "http://x", "--key", "tk_a b"], "printable ASCII"),
        (["use", "nope"], "no profile named 'nope'"),
        (["remove", "nope"], "no profile named 'nope'"),
    ],
)
def test_refusals(args: list[str], message: str) -> None:
    with pytest.raises(CLIError, match=message):
        cli(*args)
    assert not profiles_path().exists()


def test_file_is_0600_whatever_the_umask(config_dir: Path) -> None:
    old = os.umask(0)
    try:
        cli("add", "remote", "--url", "https://x.example", "--key", KEY)
        cli("use", "remote")
    finally:
        os.umask(old)
    path = config_dir / "profiles.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    assert loose_permissions() is None
    assert [p.name for p in config_dir.iterdir()] == ["profiles.toml"]  # no temp files left
    path.chmod(0o644)
    assert "chmod 600" in (loose_permissions() or "")
    cli("add", "other", "--url", "https://y.example")  # rewriting restores 0600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_default_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TIDAL_CONFIG_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert profiles_path() == tmp_path / ".config" / "tidal" / "profiles.toml"


def test_toml_round_trips_odd_strings() -> None:
    odd = Profile("odd", 'http://h.example/p?q="x"\\y\t\x7fé', 'tk_"\\')
    profiles = Profiles("odd", {"odd": odd})
    assert tomllib.loads(dump_profiles(profiles))["profiles"]["odd"]["url"] == odd.url
    save_profiles(profiles)
    assert load_profiles() == profiles


def test_broken_file_is_one_readable_error(config_dir: Path) -> None:
    config_dir.mkdir()
    (config_dir / "profiles.toml").write_text(f'key = "{KEY}\n[[')
    with pytest.raises(CLIError, match="cannot read the CLI's profiles") as err:
        load_profiles()
    assert KEY not in str(err.value)
    with pytest.raises(CLIError):
        resolve(None)
    # An explicit URL still works with a broken file.
    assert resolve_target("http://a.example") == ("http://a.example", None)


def test_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve(None).url == DEFAULT_URL and resolve(None).url_source == "default"
    cli("add", "remote", "--url", "https://remote.example", "--key", KEY)
    assert resolve_target(None) == (DEFAULT_URL, None)  # added, not current
    cli("use", "remote")
    target = resolve(None)
    assert (target.url, target.key) == ("https://remote.example", KEY)
    assert target.url_source == target.key_source == "profile 'remote'"
    monkeypatch.setenv("TIDAL_URL", "http://env.example:9000/")
    assert resolve_target(None) == ("http://env.example:9000", None)
    assert resolve(None).url_source == "TIDAL_URL"
    assert resolve_target("http://flag.example") == ("http://flag.example", None)
    monkeypatch.setenv("TIDAL_KEY", "tk_from_env")
    assert resolve_target("http://flag.example") == ("http://flag.example", "tk_from_env")
    monkeypatch.delenv("TIDAL_URL")
    assert resolve_target(None) == ("https://remote.example", "tk_from_env")
    assert resolve(None).key_source == "TIDAL_KEY"


def test_a_profile_key_only_goes_to_its_own_url() -> None:
    cli("add", "a", "--url", "https://a.example", "--key", "tk_aaaaaaaaaaaaaaaa")
    cli("add", "b", "--url", "https://b.example", "--key", "tk_bbbbbbbbbbbbbbbb")
    cli("use", "a")
    assert resolve_target("https://elsewhere.example") == ("https://elsewhere.example", None)
    # --url naming another profile's platform sends that profile's key.
    assert resolve_target("https://b.example/") == ("https://b.example", "tk_bbbbbbbbbbbbbbbb")


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("tk_0123456789abcd", "tk_…abcd"),
        ("tk_live_0123456789abcd", "tk_…abcd"),
        ("0123456789abcdef", "…cdef"),
        ("tk_short", "tk_…"),  # too short to show any of it
        ("secret", "…"),
    ],
)
def test_mask_key(key: str, shown: str) -> None:
    assert mask_key(key) == shown


def _client_with(handler: httpx.MockTransport, key: str | None) -> Client:
    client = Client("http://platform.test", key)
    headers = client._http.headers
    client._http = httpx.Client(base_url=client.url, headers=headers, transport=handler)
    return client


def test_client_sends_the_key_and_never_shows_it() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if request.url.path == "/echo":  # a platform that echoes the header back
            return httpx.Response(400, json={"detail": f"bad {request.headers['authorization']}"})
        return httpx.Response(401, json={"detail": "unauthorized"})

    client = _client_with(httpx.MockTransport(handler), KEY)
    with pytest.raises(CLIError) as err:
        client.get("/echo")
    assert KEY not in str(err.value) and "tk_…ABCD" in str(err.value)
    with pytest.raises(CLIError, match="refused the key tk_…ABCD") as err:
        client.get("/api/v1/apps")
    assert KEY not in str(err.value)
    assert seen == [f"Key {KEY}", f"Key {KEY}"]
    anonymous = _client_with(httpx.MockTransport(handler), None)
    with pytest.raises(CLIError, match="needs an API key"):
        anonymous.get("/api/v1/apps")
    assert seen[-1] is None


def test_doctor_disk_prefers_the_platforms_number(tmp_path: Path) -> None:
    target = resolve("http://127.0.0.1:1")
    reported = doctor.check_disk(
        target, {"data_dir": "/nowhere/at/all", "disk_free_bytes": 50 * 2**30}
    )
    assert reported.status == doctor.OK and "reported by the platform" in reported.detail
    measured = doctor.check_disk(target, {"data_dir": str(tmp_path)})
    assert "measured by the CLI" in measured.detail
    assert measured.data["free_bytes"] > 0
    unknown = doctor.check_disk(target, {"data_dir": "/nowhere/at/all"})
    assert unknown.status == doctor.WARN and unknown.detail.startswith("unknown")
    low = doctor.check_disk(target, {"data_dir": "/x", "disk_free_bytes": 2**20})
    assert low.status == doctor.FAIL


def test_doctor_without_a_platform_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor.run_doctor("http://127.0.0.1:9", as_json=True) == 1
    report = json.loads(capsys.readouterr().out)
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert statuses["connection"] == "fail"
    assert set(statuses) == {
        "connection",
        "key",
        "backends",
        "docker",
        "sandbox",
        "machines",
        "disk",
        "python",
    }
    assert not report["ok"]


def test_doctor_finds_this_interpreter() -> None:
    check = doctor.check_python()
    assert check.status == doctor.OK
    assert check.data["interpreters"]
