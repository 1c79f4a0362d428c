"""The templates a backend keeps: at most one waiting per key (tidal.templates.policy),
started after each runner start so the next cold start finds one, claimed by one
runner each, never shared. A key whose template proved unsafe gets no more."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tidal.backends.runner_line import RunnerLine
from tidal.runtime import channel

log = logging.getLogger("tidal.templates")

# (command, environment, working folder, log file, the descriptor to pass) -> process
Spawn = Callable[
    [Sequence[str], Mapping[str, str], Path, Path, int], Awaitable[asyncio.subprocess.Process]
]
LOG_CARRIED = 64 * 1024  # of a template's own output, copied into its runner's log
# Templates waiting at once (each holds an imported interpreter, 30-100+ MiB): beyond
# this the longest-waiting one goes, so a platform with many apps stays bounded.
MAX_WAITING = 8


@dataclass
class Template:
    id: str
    key: str
    app: str
    revision: int
    process: asyncio.subprocess.Process
    line: RunnerLine
    log_path: Path
    pid_file: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def status_path(self) -> Path:
        return self.log_path.with_suffix(".json")

    def view(self) -> dict[str, object]:
        verdict = self.line.verdict.result() if self.line.verdict.done() else None
        return {
            "id": self.id,
            "app": self.app,
            "revision": self.revision,
            "pid": self.process.pid,
            "state": "starting" if verdict is None else "ready" if verdict == "" else "unsafe",
            "rss_kib": self.line.rss_kib,
        }


class TemplatePool:
    def __init__(
        self,
        spawn: Spawn,
        runners_dir: Path,
        enabled: bool = True,
        on_discard: Callable[[asyncio.subprocess.Process], None] | None = None,
    ) -> None:
        self.enabled = enabled
        self._spawn = spawn
        # What else a discarded template leaves (its sandbox: cgroup, way out, files).
        self._on_discard = on_discard
        self._dir = runners_dir
        self._waiting: dict[str, Template] = {}
        self._unsafe: dict[str, str] = {}  # key -> why its runners start fresh
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Future[object]] = set()

    def _task(self, work: Awaitable[object]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def unsafe(self, key: str) -> str:
        return self._unsafe.get(key, "")

    def templates(self) -> list[dict[str, object]]:
        """What each waiting template is and costs (resident memory)."""
        return [t.view() for t in self._waiting.values()]

    async def claim(self, key: str) -> Template | None:
        """The key's template, once it has imported the app; None: start fresh."""
        template = self._waiting.pop(key, None)
        if template is None:
            return None
        # Started ahead of this runner, it is ready no later than a fresh start would be.
        try:
            verdict = await asyncio.shield(template.line.verdict)
        except asyncio.CancelledError:  # the start was called off (e.g. the platform stops)
            self.discard(template)
            raise
        if verdict or template.process.returncode is not None:
            if verdict and template.process.returncode is None:
                self._unsafe[key] = verdict
                log.warning("runner template of %s: not used: %s", template.app, verdict)
            self.discard(template)
            return None
        return template

    def hand_over(self, template: Template, runner_log: Path, runner_pid_file: Path) -> None:
        """The template's pid file becomes the runner's; its own output leads the runner's log."""
        with contextlib.suppress(OSError):
            size = template.log_path.stat().st_size
            with template.log_path.open("rb") as source, runner_log.open("ab") as target:
                source.seek(max(0, size - LOG_CARRIED))
                target.write(source.read())
            template.log_path.unlink()
        template.status_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            template.pid_file.rename(runner_pid_file)

    async def ensure(
        self,
        key: str,
        app: str,
        revision: int,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        spawn: Spawn | None = None,
    ) -> None:
        """Start the key's template unless one waits (or the key proved unsafe); the
        app's templates of other revisions are stopped (they would never be claimed).
        `spawn` starts it where its runner will run (the next runner's sandbox); the
        template's id is its log file's name."""
        for other in [t for t in self._waiting.values() if t.app == app and t.key != key]:
            self._waiting.pop(other.key, None)
            self.discard(other)
        if not self.enabled or key in self._waiting or key in self._unsafe:
            return
        while len(self._waiting) >= MAX_WAITING:
            oldest = min(self._waiting.values(), key=lambda t: t.started)
            self._waiting.pop(oldest.key)
            self.discard(oldest)
        template_id = f"template-{os.getpid()}-{next(self._ids)}"
        platform_end, runner_end = channel.pair()
        folder = self._dir / "templates"
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / f"{template_id}.log"
        argv = [*command, "--template", "--control-fd", str(runner_end.fileno())]
        try:
            process = await (spawn or self._spawn)(argv, env, cwd, log_path, runner_end.fileno())
        except (OSError, RuntimeError) as exc:
            platform_end.close()
            log.warning("runner template of %s could not start: %s", app, exc)
            return
        except BaseException:  # cancelled: the platform stops
            platform_end.close()
            raise
        finally:
            runner_end.close()
        pid_file = folder / f"{template_id}.pid"  # reaped like a runner's, not listed as one
        pid_file.write_text(str(process.pid))
        template = Template(
            template_id, key, app, revision, process, RunnerLine(platform_end), log_path, pid_file
        )
        if not self.enabled:  # the platform began stopping while it was spawned
            self.discard(template)
            return
        self._waiting[key] = template
        self._task(self._report(template))

    async def _report(self, template: Template) -> None:
        verdict = await asyncio.shield(template.line.verdict)
        if verdict and self._waiting.get(template.key) is template:
            self._waiting.pop(template.key)
            if template.process.returncode is None:
                self._unsafe[template.key] = verdict
            log.warning("runner template of %s: not used: %s", template.app, verdict)
            self.discard(template)
        elif not verdict:
            waited = time.monotonic() - template.started
            with contextlib.suppress(OSError):  # what `ls DATA_DIR/runners/templates` shows
                template.status_path.write_text(json.dumps(template.view()) + "\n")
            log.info("runner template of %s rev %d ready in %.2f s, %d MiB resident",
                     template.app, template.revision, waited, template.line.rss_kib // 1024)  # fmt: skip

    def discard(self, template: Template) -> None:
        template.line.close()  # the template exits when its line closes ...
        _killpg(template.process.pid, signal.SIGKILL)  # ... or at once, if it is still importing
        template.pid_file.unlink(missing_ok=True)
        template.log_path.unlink(missing_ok=True)
        template.status_path.unlink(missing_ok=True)
        self._task(template.process.wait())  # reap it
        if self._on_discard is not None:
            self._on_discard(template.process)

    def kill_all(self) -> None:
        self.enabled = False  # the platform is stopping: no more
        for template in list(self._waiting.values()):
            template.line.close()
            _killpg(template.process.pid, signal.SIGKILL)
            template.pid_file.unlink(missing_ok=True)
            template.status_path.unlink(missing_ok=True)
        self._waiting.clear()


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
