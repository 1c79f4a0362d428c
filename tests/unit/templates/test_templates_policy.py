"""Which runners may claim a template, and what makes a template unsafe."""

from __future__ import annotations

import subprocess
import sys

from tidal.templates import template_env, template_key
from tidal.templates.policy import pool_size, templates_asked

COMMAND = ["/venv/bin/python", "-m", "tidal.runtime", "--bundle", "/b", "--entry", "app.py::A"]


def runner_env(runner_id: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin",
        "TIDAL_RUNNER_ID": runner_id,
        "TIDAL_REQUEST_LOG": f"/logs/{runner_id}.requests.jsonl",
        "TIDAL_MACHINE_TYPE": "S",
        "CUDA_VISIBLE_DEVICES": "0",
        "API_TOKEN": "first",
        **extra,
    }


def test_a_template_runs_without_what_is_per_runner_and_no_gpu() -> None:
    env = template_env(runner_env("r-1"))
    assert env["TIDAL_RUNNER_ID"] == "template"  # still a runner to the SDK
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["TIDAL_REQUEST_LOG"] == env["TIDAL_MACHINE_TYPE"] == ""
    assert env["API_TOKEN"] == "first" and env["PATH"] == "/usr/bin"
    assert "CUDA_VISIBLE_DEVICES" not in template_env({"PATH": "/usr/bin"})


def test_runners_differing_only_in_what_is_per_runner_share_a_key() -> None:
    one = template_key(COMMAND, "/b", runner_env("r-1"))
    assert one == template_key(COMMAND, "/b", {**runner_env("r-2"), "CUDA_VISIBLE_DEVICES": "1"})


def test_a_changed_secret_command_or_folder_needs_another_template() -> None:
    one = template_key(COMMAND, "/b", runner_env("r-1"))
    assert one != template_key(COMMAND, "/b", runner_env("r-1", API_TOKEN="second"))
    assert one != template_key([*COMMAND, "--isolate-network"], "/b", runner_env("r-1"))
    assert one != template_key(COMMAND, "/other", runner_env("r-1"))


def test_a_thread_started_at_import_makes_a_template_unsafe() -> None:
    # In a fresh interpreter, as a template is: this test process has other tests' threads.
    def reason(module_code: str) -> str:
        code = f"{module_code}\nfrom tidal.runtime.template import unsafe_reason\nprint(unsafe_reason())"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=60)  # fmt: skip
        return done.stdout.strip()

    assert reason("import json") == ""
    started = "import threading\nthreading.Thread(target=threading.Event().wait, name='warmup-downloader', daemon=True).start()"
    assert reason(started) == "the app's module started threads at import (warmup-downloader)"


def test_an_app_asks_for_none_one_or_a_count_of_templates_within_its_runners() -> None:
    assert templates_asked(False, 10) == 0
    assert templates_asked(True, 10) == 1
    assert templates_asked(3, 10) == 3
    assert templates_asked(5, 2) == 2  # never more than the runners it may have at once
    assert templates_asked(0, 10) == 0


def test_the_pool_is_one_until_a_template_says_what_it_costs() -> None:
    assert pool_size(3, rss_kib=0, available_kib=10**8, waiting=0) == 1
    assert pool_size(0, rss_kib=0, available_kib=10**8, waiting=0) == 0


def test_the_pool_holds_what_half_the_available_memory_holds_and_at_least_one() -> None:
    mib = 1024
    assert pool_size(3, rss_kib=100 * mib, available_kib=10_000 * mib, waiting=1) == 3
    # 500 MiB available besides one waiting (100 MiB): half of 600 MiB holds three.
    assert pool_size(8, rss_kib=100 * mib, available_kib=500 * mib, waiting=1) == 3
    assert pool_size(8, rss_kib=100 * mib, available_kib=0, waiting=0) == 1
