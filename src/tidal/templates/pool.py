"""The templates a backend keeps: a small pool per key (tidal.templates.policy says
how many), started at deploy and refilled after each claim so the next cold starts,
a burst's included, find one each; each claimed by one runner, never shared. A key
whose template proved unsafe gets no more."""

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
from tidal.templates.policy import pool_size

log = logging.getLogger("tidal.templates")

# (command, environment, working folder, log file, the descriptor to pass) -> process
Spawn = Callable[
    [Sequence[str], Mapping[str, str], Path, Path, int], Awaitable[asyncio.subprocess.Process]
]
LOG_CARRIED = 64 * 1024  # of a template's own output, copied into its runner's log
# Templates waiting at once (each holds an imported interpreter, 30-100+ MiB): beyond
# this another revision's longest-waiting one goes, so a platform with many apps stays
# bounded.
MAX_WAITING = 8


@dataclass
class Template:
    id: str
    key: str
    app: str
    revision: int
    owner: str
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


@dataclass(frozen=True)
class Recipe:
    """How a key's templates are started, and how many of them its runners want."""

    app: str
    owner: str
    revision: int
    command: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    spawn: Spawn | None
    asked: int


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
        self._waiting: dict[str, list[Template]] = {}  # key -> its templates, oldest first
        self._spawning: dict[str, int] = {}  # key -> templates being spawned now
        self._recipes: dict[str, Recipe] = {}
        self._rss: dict[str, int] = {}  # key -> what its last ready template used (KiB)
        self._unsafe: dict[str, str] = {}  # key -> why its runners start fresh
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Future[object]] = set()

    def _task(self, work: Awaitable[object]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def unsafe(self, key: str) -> str:
        return self._unsafe.get(key, "")

    def _all(self) -> list[Template]:
        return [t for waiting in self._waiting.values() for t in waiting]

    def templates(self) -> list[dict[str, object]]:
        """What each waiting template is and costs (resident memory)."""
        return [t.view() for t in self._all()]

    def _remove(self, template: Template) -> bool:
        waiting = self._waiting.get(template.key, [])
        if template not in waiting:
            return False
        waiting.remove(template)
        if not waiting:
            del self._waiting[template.key]
        return True

    async def claim(self, key: str) -> Template | None:
        """One of the key's templates, once it has imported the app (a ready one if
        any: the oldest otherwise); None: start fresh."""
        waiting = self._waiting.get(key)
        if not waiting:
            return None
        ready = [t for t in waiting if t.line.verdict.done() and not t.line.verdict.result()]
        template = (ready or waiting)[0]
        self._remove(template)
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
        count: int = 1,
        owner: str = "",
    ) -> None:
        """Fill the key's pool: up to `count` templates (as far as the host's memory
        holds them; tidal.templates.policy), unless the key proved unsafe. The app's
        templates of other revisions are stopped (they would never be claimed).
        `spawn` starts one where its runner will run (the next runner's sandbox); a
        template's id is its log file's name."""
        self._forget(owner, app, but=key)
        self._recipes[key] = Recipe(
            app, owner, revision, tuple(command), dict(env), cwd, spawn, count
        )
        await self._fill(key)

    def forget(self, owner: str, app: str) -> None:
        """The app is deleted: its templates go, and none is started for it any more
        (one being spawned now is discarded when it has started)."""
        self._forget(owner, app)

    def _forget(self, owner: str, app: str, but: str = "") -> None:
        for other in [t for t in self._all() if (t.owner, t.app) == (owner, app) and t.key != but]:
            self._remove(other)
            self.discard(other)
        for old in [k for k, r in self._recipes.items() if (r.owner, r.app) == (owner, app)]:
            if old != but:
                del self._recipes[old]
                self._rss.pop(old, None)

    async def _fill(self, key: str) -> None:
        recipe = self._recipes.get(key)
        while recipe is not None and self.enabled and key not in self._unsafe:
            have = len(self._waiting.get(key, [])) + self._spawning.get(key, 0)
            wanted = pool_size(recipe.asked, self._rss.get(key, 0), available_kib(), have)
            if have >= wanted or not self._make_room(key):
                return
            await self._start(key, recipe)
            recipe = self._recipes.get(key)  # gone: another revision took over meanwhile

    def _make_room(self, key: str) -> bool:
        """Room for one more template under MAX_WAITING: another key's oldest goes."""
        while len(self._all()) + sum(self._spawning.values()) >= MAX_WAITING:
            others = [t for t in self._all() if t.key != key]
            if not others:
                return False
            oldest = min(others, key=lambda t: t.started)
            self._remove(oldest)
            self.discard(oldest)
        return True

    async def _start(self, key: str, recipe: Recipe) -> None:
        template_id = f"template-{os.getpid()}-{next(self._ids)}"
        platform_end, runner_end = channel.pair()
        folder = self._dir / "templates"
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / f"{template_id}.log"
        argv = [*recipe.command, "--template", "--control-fd", str(runner_end.fileno())]
        self._spawning[key] = self._spawning.get(key, 0) + 1
        try:
            process = await (recipe.spawn or self._spawn)(
                argv, recipe.env, recipe.cwd, log_path, runner_end.fileno()
            )
        except (OSError, RuntimeError) as exc:
            platform_end.close()
            log.warning("runner template of %s could not start: %s", recipe.app, exc)
            self._recipes.pop(key, None)  # no retry loop; the next runner start asks again
            return
        except BaseException:  # cancelled: the platform stops
            platform_end.close()
            raise
        finally:
            runner_end.close()
            self._spawning[key] -= 1
            if not self._spawning[key]:
                del self._spawning[key]
        pid_file = folder / f"{template_id}.pid"  # reaped like a runner's, not listed as one
        pid_file.write_text(str(process.pid))
        template = Template(
            template_id, key, recipe.app, recipe.revision, recipe.owner, process,
            RunnerLine(platform_end), log_path, pid_file,
        )  # fmt: skip
        if not self.enabled or key not in self._recipes:
            # The platform began stopping, or another revision took over, while it spawned.
            self.discard(template)
            return
        self._waiting.setdefault(key, []).append(template)
        self._task(self._report(template))

    async def _report(self, template: Template) -> None:
        verdict = await asyncio.shield(template.line.verdict)
        if verdict and self._remove(template):
            if template.process.returncode is None:
                self._unsafe[template.key] = verdict
                for other in self._waiting.pop(template.key, []):
                    self.discard(other)
            log.warning("runner template of %s: not used: %s", template.app, verdict)
            self.discard(template)
        elif not verdict:
            waited = time.monotonic() - template.started
            first = template.key not in self._rss
            self._rss[template.key] = template.line.rss_kib
            with contextlib.suppress(OSError):  # what `ls DATA_DIR/runners/templates` shows
                template.status_path.write_text(json.dumps(template.view()) + "\n")
            log.info("runner template of %s rev %d ready in %.2f s, %d MiB resident",
                     template.app, template.revision, waited, template.line.rss_kib // 1024)  # fmt: skip
            if first:  # what one costs is known now: the rest of the pool can follow
                self._task(self._fill(template.key))

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
        for template in self._all():
            template.line.close()
            _killpg(template.process.pid, signal.SIGKILL)
            template.pid_file.unlink(missing_ok=True)
            template.status_path.unlink(missing_ok=True)
        self._waiting.clear()
        self._recipes.clear()


def available_kib() -> int:
    """The host's available memory (MemAvailable), in KiB; 0 where it can't be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
