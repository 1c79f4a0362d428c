"""Calling a plain function from the caller's own script, as fal does: `add(1, 2)`
runs `add` on a runner of the platform and returns its value.

The first call in a process deploys the function's file as an app named after
the function (or reuses the deployed app when its code bundle is the same), on
the platform the CLI would use (`TIDAL_URL`/`TIDAL_KEY` or the profile). Each
call goes through the queue, so a long call survives a dropped connection and
the platform's restarts: it is submitted, the runner's output is printed here
as the queue's status stream reports it, and the result is fetched once it is
complete. Arguments and results travel in `tidal.sdk.wire`'s format
(cloudpickle; see its limits); an exception is raised here with the runner's
traceback as its cause.
"""

from __future__ import annotations

import inspect
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from tidal.sdk.wire import CONTENT_TYPE, Answer, decode_answer, encode_call

if TYPE_CHECKING:
    from tidal.sdk.function import Function

R = TypeVar("R")

POLL_SECONDS = 0.2
_deployed: dict[int, Target] = {}
_deploy_lock = threading.Lock()


class RemoteCallError(RuntimeError):
    """A call that could not be made or answered (not the function's own exception)."""


@dataclass(frozen=True)
class Target:
    base_url: str
    key: str | None
    owner: str
    app: str

    def http(self, timeout: float | None = 60.0) -> httpx.Client:
        headers = {"authorization": f"Key {self.key}"} if self.key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)


def ensure_deployed(fn: Function[..., Any]) -> Target:
    """The app running `fn`: deployed now, unless the platform already runs this code."""
    with _deploy_lock:
        if id(fn) in _deployed:
            return _deployed[id(fn)]
        target = _deploy(fn)
        _deployed[id(fn)] = target
        return target


def _deploy(fn: Function[..., Any]) -> Target:
    from rich.console import Console

    from tidal.cli.client import CLIError, connect
    from tidal.cli.deploy import code_bundle, default_app_name, deploy_found

    source = inspect.getsourcefile(fn.func)
    if source is None or not Path(source).is_file():
        raise RemoteCallError(
            f"{fn.func.__name__} has no source file to deploy: define it in a .py file "
            "(not in an interactive session) to call it on a runner, or call .local(...)"
        )
    path = Path(source).resolve()
    name = fn.func.__name__
    module = sys.modules.get(fn.func.__module__)
    if module is None or getattr(module, name, None) is not fn:
        raise RemoteCallError(
            f"{name} must be defined at the top level of {path.name} under its own name "
            "to be deployed"
        )
    app = default_app_name(name, fn)
    console = Console(stderr=True)
    try:
        client = connect()
        _, digest = code_bundle(path, fn)
        current = _current(client, app)
        entry = f"{path.name}::{name}"
        if current and current["bundle_digest"] == digest and current["entry"] == entry:
            return Target(client.url, client.key, current["owner"], app)
        with console.status(f"Deploying {name}…") as status:
            view = deploy_found(client, path, name, fn, app, status, console)
        console.print(f"[green]✓[/] Deployed {view['owner']}/{app} revision {view['revision']}")
        return Target(client.url, client.key, view["owner"], app)
    except CLIError as exc:
        raise RemoteCallError(f"cannot deploy {name}: {exc}") from None


def _current(client: Any, app: str) -> dict[str, Any] | None:
    from tidal.cli.client import CLIError

    try:
        view: dict[str, Any] = client.get(f"/api/v1/apps/{app}")
        return view
    except CLIError as exc:
        if "no app" in str(exc).lower() or "not found" in str(exc).lower():
            return None
        raise


@dataclass
class RemoteCall(Generic[R]):
    """A queued call: `result()` waits for it (printing the runner's output)."""

    target: Target
    request_id: str
    status_url: str
    response_url: str
    module: str  # the function's module here
    _printed: int = field(default=0, repr=False)

    def status(self) -> dict[str, Any]:
        with self.target.http() as http:
            resp = http.get(self.status_url, params={"logs": 1})
        if resp.status_code >= 400:
            raise RemoteCallError(
                f"status of call {self.request_id}: {resp.status_code} {resp.text[:500]}"
            )
        out: dict[str, Any] = resp.json()
        return out

    def result(self, timeout: float | None = None) -> R:
        """The function's value, or its exception raised here."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.target.http(timeout=None) as http:
            for status in self._statuses(http, deadline):
                self._print_logs(status.get("logs") or [])
                if status.get("status") == "COMPLETED":
                    break
            resp = http.get(self.response_url)
        if resp.status_code in (404, 202):
            raise RemoteCallError(f"call {self.request_id} has no result: {resp.text[:500]}")
        answer = _decode(resp, self.module)
        if answer.error is not None:
            raise answer.error
        value: R = answer.value
        return value

    def _statuses(self, http: httpx.Client, deadline: float | None) -> Iterator[dict[str, Any]]:
        """The status as it changes, from the queue's server-sent event stream."""
        while True:
            with http.stream("GET", self.status_url + "/stream", params={"logs": 1}) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise RemoteCallError(
                        f"call {self.request_id}: {resp.status_code} {resp.text[:500]}"
                    )
                for line in resp.iter_lines():
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"call {self.request_id} did not finish in time")
                    if line.startswith("data: "):
                        status = json.loads(line.removeprefix("data: "))
                        yield status
                        if status.get("status") == "COMPLETED":
                            return
            time.sleep(POLL_SECONDS)  # the stream ended early (a restart): follow it again

    def _print_logs(self, logs: list[dict[str, Any]]) -> None:
        for entry in logs[self._printed :]:
            stream = sys.stderr if entry.get("level") == "ERROR" else sys.stdout
            print(entry.get("message", ""), file=stream, flush=True)
        self._printed = max(self._printed, len(logs))


def _decode(resp: httpx.Response, module: str) -> Answer:
    if not resp.headers.get("content-type", "").startswith(CONTENT_TYPE):
        raise RemoteCallError(f"the platform answered {resp.status_code}: {resp.text[:500]}")
    return decode_answer(resp.status_code, resp.content, module)


def submit(fn: Function[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> RemoteCall[R]:
    target = ensure_deployed(fn)
    body = encode_call(args, kwargs)
    with target.http() as http:
        resp = http.post(
            f"/queue/{target.owner}/{target.app}", content=body,
            headers={"content-type": CONTENT_TYPE},
        )  # fmt: skip
    if resp.status_code != 200:
        raise RemoteCallError(f"queueing {fn.func.__name__}: {resp.status_code} {resp.text[:500]}")
    queued = resp.json()
    return RemoteCall(
        target, queued["request_id"], queued["status_url"], queued["response_url"],
        fn.func.__module__,
    )  # fmt: skip


def call(fn: Function[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
    return submit(fn, args, kwargs).result()
