"""The sandbox's filesystem plan: what is hidden, what is bound back, in what order."""

from __future__ import annotations

from tidal.sandbox.mounts import Bind, bwrap_mounts


def _pairs(args: list[str]) -> list[tuple[str, ...]]:
    """bwrap's arguments as (flag, operands...) tuples, in order."""
    arity = {"--ro-bind": 2, "--bind": 2, "--dev-bind": 2, "--dev": 1, "--proc": 1,
             "--tmpfs": 1, "--dir": 1, "--perms": 1}  # fmt: skip
    out, i = [], 0
    while i < len(args):
        n = arity[args[i]]
        out.append(tuple(args[i : i + 1 + n]))
        i += 1 + n
    return out


def test_data_dir_is_emptied_and_only_the_runners_parts_come_back() -> None:
    args = bwrap_mounts(
        [Bind("/srv/tidal/bundles/abc", "/srv/tidal/bundles/abc"),
         Bind("/srv/tidal/data", "/data", "rw")],
        hidden=["/srv/tidal"],
        traversable=lambda p: True,
    )  # fmt: skip
    pairs = _pairs(args)
    assert pairs[0] == ("--ro-bind", "/", "/")
    assert ("--tmpfs", "/srv/tidal") in pairs
    assert ("--tmpfs", "/tmp") in pairs
    # The folders leading to the bundle exist, readable, inside the emptied DATA_DIR.
    bundles = pairs.index(("--dir", "/srv/tidal/bundles"))
    assert pairs[bundles - 1] == ("--perms", "0755")
    assert pairs.index(("--ro-bind", "/srv/tidal/bundles/abc", "/srv/tidal/bundles/abc")) > bundles
    assert ("--bind", "/srv/tidal/data", "/data") in pairs
    # Nothing else of DATA_DIR: no key, no database, no other bundle is bound.
    bound = [p for p in pairs if p[0] in ("--ro-bind", "--bind")]
    assert len(bound) == 3


def test_folders_the_sandbox_uid_cannot_pass_are_emptied_too() -> None:
    """An interpreter under /root (pyenv) is bound back into an empty /root."""
    args = bwrap_mounts(
        [Bind("/root/.pyenv/versions/3.11", "/root/.pyenv/versions/3.11")],
        hidden=["/var/lib/tidal"],
        traversable=lambda p: p != "/root",
    )
    pairs = _pairs(args)
    assert ("--tmpfs", "/root") in pairs
    assert ("--dir", "/root/.pyenv") in pairs and ("--dir", "/root/.pyenv/versions") in pairs
    assert ("--ro-bind", "/root/.pyenv/versions/3.11", "/root/.pyenv/versions/3.11") in pairs


def test_read_only_paths_the_host_shows_already_cost_no_mount() -> None:
    args = bwrap_mounts([Bind("/usr", "/usr")], hidden=[], traversable=lambda p: True)
    assert "/usr" not in args


def test_nested_hidden_folders_give_one_tmpfs() -> None:
    args = bwrap_mounts(
        [], hidden=["/tmp/pytest/x", "/srv/a", "/srv/a/b"], traversable=lambda p: True
    )
    tmpfs = [p[1] for p in _pairs(args) if p[0] == "--tmpfs"]
    assert sorted(tmpfs) == ["/srv/a", "/tmp"]  # /tmp/pytest/x is inside the private /tmp


def test_gpu_devices_are_bound_after_the_private_dev() -> None:
    args = bwrap_mounts([Bind("/dev/nvidia0", "/dev/nvidia0", "dev")], [], lambda p: True)
    pairs = _pairs(args)
    assert pairs.index(("--dev-bind", "/dev/nvidia0", "/dev/nvidia0")) > pairs.index(
        ("--dev", "/dev")
    )
