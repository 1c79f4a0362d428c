"""fal's queue API on the gateway, durable.

`POST /queue/{owner}/{app}/{path}` stores the request (SQLite) before answering
with its id and URLs; a dispatcher per app hands stored requests, in priority
and arrival order, to the same router and runners as the sync path, and
stores the runner's answer for `GET .../requests/{id}`. A request that was in
progress when the platform died runs again once on restart (at-least-once).
`?fal_webhook=URL` (or `?webhook=URL`) has the outcome POSTed, signed, to URL
(tidal/gateway/webhooks.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tidal.backends.base import Runner
from tidal.control.group_commit import GroupCommit
from tidal.control.queue_store import (
    COMPLETED,
    IN_PROGRESS,
    IN_QUEUE,
    LEASE_SECONDS,
    PURGE_BATCH,
    RUNNER_LOSS_ATTEMPTS,
    QueuedRequest,
    QueueStore,
)
from tidal.domain.router import RouterError
from tidal.gateway.http1 import UpstreamConnectError
from tidal.gateway.proxy import Gateway, _Progress, _Upstream
from tidal.gateway.queue_fast import urls_of
from tidal.gateway.queue_memory import FINISHED_KEPT, STATUS_KEPT, Held, Lines
from tidal.gateway.webhooks import WebhookSender
from tidal.observe.records import QUEUE, RequestRecord, cold_start_of
from tidal.observe.request_logs import logs_for
from tidal.scaling.controller import Controller, Deployment

if TYPE_CHECKING:
    from tidal.observe.records import Recorder

log = logging.getLogger("tidal.queue")

# Completed requests remembered as having logged nothing (~100 B each): as many as
# `Held` keeps statuses of, so a poll it answers never scans the request logs.
QUIET_KEPT = FINISHED_KEPT + STATUS_KEPT
# A runner's answers that get a queued request run again (fal: 503, 504, 429).
RETRIED_STATUSES = frozenset({429, 503, 504})


class QueueService:
    def __init__(self, store: QueueStore, controller: Controller, gateway: Gateway) -> None:
        self.store = store
        self.controller = controller
        self.gateway = gateway
        # Submits, claims and completions: batched into few transactions, off the loop.
        self.writes = GroupCommit(store.engine)
        # This platform's memory of the queue (tidal.gateway.queue_memory): the lines
        # only where it alone uses the database, so they are the whole queue.
        self.lines: Lines | None = None if store.shared else Lines()
        self.held = Held()
        self._quiet: OrderedDict[str, None] = OrderedDict()  # completed, logged nothing
        self._watchers: dict[str, list[asyncio.Event]] = {}  # request id -> its SSE streams
        self._wake: dict[tuple[str, str], asyncio.Event] = {}
        self._dispatchers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._unclaimed: dict[tuple[str, str], int] = {}  # workers not yet holding a request
        self._running: dict[str, asyncio.Task[None]] = {}  # request id -> its worker
        self._running_app: dict[str, tuple[str, str]] = {}  # request id -> its app
        self._ending: dict[str, tuple[str, str]] = {}  # request id -> why it was stopped
        self._workers: set[asyncio.Task[None]] = set()
        self._cancelled: set[str] = set()  # ids a caller cancelled while they ran
        self._closing = False
        self._purger: asyncio.Task[None] | None = None
        self._leases: asyncio.Task[None] | None = None
        self.webhooks = WebhookSender(
            store, controller.config.data_dir, controller.config.webhook_allowed_hosts
        )
        # Each finished request is handed to it (tidal.observe.records), if set.
        self.recorder: Recorder | None = None

    async def submit(self, item: QueuedRequest) -> int | None:
        """Store a new request (durably: the caller hears of it only after the commit)
        and put it in line; its position."""
        await self.writes.run(partial(self.store.insert, item=item))
        key = (item.owner, item.app)
        if key not in self.controller.deployments:  # deleted while it was stored
            await self.end_app(*key)
            return None
        if self.lines is not None:
            self.lines.add(key, item.priority, item.seq, item.id)
            self.held.hold(item)
        self.kick(key)
        return await self.position(item.id)

    @contextlib.contextmanager
    def watching(self, request_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the request's status changes here (claimed, put back,
        completed): a status stream sends the change at once instead of at its next
        look. Positions and changes made by another platform are not signalled."""
        event = asyncio.Event()
        self._watchers.setdefault(request_id, []).append(event)
        try:
            yield event
        finally:
            events = self._watchers[request_id]
            events.remove(event)
            if not events:
                del self._watchers[request_id]

    def _changed(self, request_id: str) -> None:
        for event in self._watchers.get(request_id, ()):
            event.set()

    async def get(self, request_id: str) -> QueuedRequest | None:
        """The request as it is now, bodies included: from memory where this platform
        holds it."""
        return await self._read(request_id, self.held.get(request_id))

    async def status_of(self, request_id: str) -> QueuedRequest | None:
        """As `get`, but its bodies may be left out (a status poll does not read them),
        so older finished requests are answered from memory too."""
        return await self._read(request_id, self.held.status(request_id))

    async def _read(self, request_id: str, item: QueuedRequest | None) -> QueuedRequest | None:
        # A waiting request's memory is the truth only where the lines are the whole queue.
        if item is not None and (self.lines is not None or item.status != IN_QUEUE):
            return item
        return await asyncio.to_thread(self.store.get, request_id)

    async def position(self, request_id: str) -> int | None:
        if self.lines is not None:
            return self.lines.position(request_id)
        return await asyncio.to_thread(self.store.position, request_id)

    async def status_view(self, base_url: str, item: QueuedRequest, logs: bool) -> dict[str, Any]:
        """fal's status answer for a request."""
        out: dict[str, Any] = {"status": item.status, "request_id": item.id,
                               **urls_of(base_url, item.owner, item.app, item.id)}  # fmt: skip
        if item.status == IN_QUEUE:
            out["queue_position"] = await self.position(item.id)
        if item.status != IN_QUEUE:
            # What an App's endpoint printed while serving it (a direct server's output is
            # in its runner's log: it cannot be told apart per request). fal's clients
            # expect the key whenever the request has started.
            out["logs"] = await self._logs(item) if logs or item.status == COMPLETED else None
        if item.status == COMPLETED:
            if item.started_at and item.completed_at:
                out["metrics"] = {"inference_time": round(item.completed_at - item.started_at, 4)}
            if item.error:
                out["error"], out["error_type"] = item.error, item.error_type
        return out

    async def _logs(self, item: QueuedRequest) -> list[dict[str, Any]]:
        if item.id in self._quiet:
            return []
        folder = self.controller.config.data_dir / "logs" / item.owner / item.app
        if not folder.is_dir():
            return []  # nothing logged per request (a direct server): no scan at all
        found = await asyncio.to_thread(logs_for, folder, item.id)
        if not found and item.status == COMPLETED:
            # Its runner is done with it: later polls are answered without a scan of the
            # app's request logs (which a status poll per request would repeat).
            self._remember_quiet(item.id)
        return found

    def _remember_quiet(self, request_id: str) -> None:
        self._quiet[request_id] = None
        if len(self._quiet) > QUIET_KEPT:
            self._quiet.popitem(last=False)

    def _direct_server(self, item: QueuedRequest, runner: Runner) -> bool:
        """Whether `runner` serves its own web server (a function with exposed_port, or
        an image): only an App's or a plain function's runtime writes request logs."""
        dep = self.controller.deployments.get((item.owner, item.app))
        if dep is None or dep.record.revision != runner.revision:
            return False
        spec = dep.record.spec
        return spec.kind == "image" or (
            spec.kind == "function" and dep.record.options.exposed_port is not None
        )

    async def complete(
        self, request_id: str, status: int | None, headers: list[tuple[str, str]],
        body: bytes | None, error: str | None = None, error_type: str | None = None,
        runner: Runner | None = None,
    ) -> None:  # fmt: skip
        """Record the outcome and, where a webhook was asked for, send it (in a task)."""
        now = time.time()
        done = await self.writes.run(
            partial(self.store.complete_in, request_id=request_id, status=status,
                    headers=headers, body=body, error=error, error_type=error_type, now=now)
        )  # fmt: skip
        if not done:
            return
        item = self.held.live(request_id) or await asyncio.to_thread(self.store.get, request_id)
        if item is None:
            return  # forgotten this instant
        item.status, item.completed_at = COMPLETED, now
        item.response_status, item.response_headers = status, headers
        item.response_body, item.error, item.error_type = body, error, error_type
        if runner is None or self._direct_server(item, runner):
            self._remember_quiet(item.id)  # it cannot have logged: no scan for its polls
        self.held.finished(item)
        self._changed(item.id)
        if item.webhook_url:
            self.webhooks.send(item)
        if self.recorder is not None:
            self.recorder.add(_record(item, runner))

    def stop_running(self, owner: str, app: str) -> None:
        """The app is being deleted: its running requests stop and complete with
        `app_deleted` (not put back in line, where they would wait for another app)."""
        for request_id, task in list(self._running.items()):
            if self._running_app.get(request_id) == (owner, app):
                self._ending[request_id] = (
                    f"the app {app!r} was deleted while this request ran",
                    "app_deleted",
                )
                task.cancel()

    def ended(self, items: list[QueuedRequest]) -> None:
        """Waiting requests completed behind this service's back (a flush): out of
        line and answered from memory as they now are."""
        for item in items:
            if self.lines is not None:
                self.lines.remove(item.id)
            self.held.finished(item)
            self._changed(item.id)

    async def end_app(self, owner: str, app: str) -> int:
        """The app is deleted (and gone from the controller): its waiting requests
        complete with `app_deleted`, their webhooks sent, so none runs on an app
        deployed later under the same name. How many were ended."""
        key = (owner, app)
        if (dispatcher := self._dispatchers.pop(key, None)) is not None:
            dispatcher.cancel()
        self._wake.pop(key, None)
        if self.lines is not None:
            self.lines.drop(key)
        error = f"the app {app!r} was deleted before this request ran"
        ended = await self.writes.run(partial(self.store.end_app, owner=owner, app=app,
                                              error=error))  # fmt: skip
        for item in ended:
            self.held.finished(item)
            self._changed(item.id)
            if item.webhook_url:
                self.webhooks.send(item)
        return len(ended)

    def start(self) -> None:
        retried, failed = self.store.recover()
        if retried or failed:
            log.warning(
                "queue after restart: %d request(s) to run again, %d failed", retried, failed
            )
        self._load_lines()
        keys = self.lines.keys() if self.lines is not None else self.store.apps_waiting()
        for key in keys:
            self.kick(key)
        self._purger = asyncio.create_task(self._purge_results())
        self._leases = asyncio.create_task(self._keep_leases())
        if owed := self.webhooks.resume():
            log.info("queue after restart: %d webhook(s) to deliver", owed)

    def _load_lines(self) -> None:
        if self.lines is None:
            return
        self.lines.clear()
        for owner, app, priority, seq, request_id in self.store.waiting_lines():
            self.lines.add((owner, app), priority, seq, request_id)

    async def _purge_results(self) -> None:
        """Forget results past the TTL, and each app's beyond its newest
        `queue_results_per_app`, in short batches, in a thread: never on the hot path."""
        config = self.controller.config
        ttl, keep = config.queue_result_ttl_seconds, config.queue_results_per_app
        while True:
            try:
                removed = await self._in_batches(lambda: self.store.purge(ttl))
                # Apps may keep fewer or more than the platform's (tidal apps scale).
                caps = {key: cap for key, dep in self.controller.deployments.items()
                        if (cap := dep.record.queue_results) is not None}  # fmt: skip
                floor = min([keep, *caps.values()])
                for owner, app in await asyncio.to_thread(self.store.over_cap, floor):
                    cap = caps.get((owner, app), keep)
                    removed += await self._in_batches(partial(self.store.trim, owner, app, cap))
                if removed:
                    self.held.forget_finished()
                    log.info("queue: forgot %d old result(s)", removed)
            except Exception:  # the database may be away for a moment; try next time
                log.exception("queue: pruning old results failed")
            await asyncio.sleep(min(600.0, max(1.0, ttl / 10)))

    @staticmethod
    async def _in_batches(batch: Callable[[], int]) -> int:
        total = 0
        while (removed := await asyncio.to_thread(batch)) > 0:
            total += removed
            if removed < PURGE_BATCH:
                break
            await asyncio.sleep(0.05)  # let the queue's own writes in between
        return total

    async def _keep_leases(self) -> None:
        """Renew the leases of what this platform runs, and put back in line what a
        platform sharing the queue held when it died (its leases ran out)."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                await asyncio.to_thread(self.store.renew_leases)
                retried, failed = await asyncio.to_thread(self.store.recover, False)
            except Exception:  # the database may be away for a moment; try next time
                log.exception("queue: renewing leases failed")
                continue
            if retried or failed:
                log.warning(
                    "queue: %d request(s) of a platform that stopped run again, %d failed",
                    retried,
                    failed,
                )
                await asyncio.to_thread(self._load_lines)
                keys = self.lines.keys() if self.lines is not None else self.store.apps_waiting()
                for key in keys:
                    self.kick(key)

    async def close(self) -> None:
        """A graceful stop: nothing new is claimed, requests running finish within
        `stop_grace_seconds`, and the ones that don't go back in the queue (at their
        place, not counted as an attempt) for the next start. Only a caller's cancel
        completes a request as cancelled."""
        self._closing = True
        running = set(self._running.values())
        for task in (self._purger, self._leases, *self._dispatchers.values()):
            if task is not None:
                task.cancel()
        for task in self._workers - running:
            task.cancel()  # waiting for a slot: holds no request
        if running:
            _, late = await asyncio.wait(running, timeout=self.controller.config.stop_grace_seconds)
            for task in late:
                task.cancel()
        tasks = [*self._dispatchers.values(), *self._workers]
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self.writes.close)  # what is queued is written
        await self.webhooks.close()  # undelivered ones go out on the next start

    def kick(self, key: tuple[str, str]) -> None:
        if self._closing:
            return
        if key not in self._dispatchers:
            self._wake[key] = asyncio.Event()
            self._dispatchers[key] = asyncio.create_task(self._dispatch(key))
        self._wake[key].set()

    async def _waiting(self, key: tuple[str, str]) -> int:
        if self.lines is not None:
            return self.lines.count(key)
        return await asyncio.to_thread(self.store.waiting, *key)

    async def _dispatch(self, key: tuple[str, str]) -> None:
        wake = self._wake[key]
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 1.0)
            wake.clear()
            dep = self.controller.deployments.get(key)
            if dep is None:
                continue  # not (yet) deployed: the requests wait
            options = dep.record.options
            # At most one waiting worker per slot the app may have: a worker waits in
            # the app's router, which is what scales it up, and in line with sync
            # callers (FIFO), so a steady sync load can't starve the queue.
            limit = self.controller.ceiling(dep) * options.max_multiplexing
            waiting = await self._waiting(key)
            unclaimed = self._unclaimed.get(key, 0)
            while unclaimed < min(waiting, limit):
                unclaimed += 1
                task = asyncio.create_task(self._work(key, dep))
                self._workers.add(task)
                task.add_done_callback(self._workers.discard)
            self._unclaimed[key] = unclaimed

    async def _claim(self, key: tuple[str, str]) -> QueuedRequest | None:
        """The next request in line, now in progress here. Where this platform alone
        uses the database, it is the head of the line in memory, handed over at once;
        the claim is written in the next group commit (a platform that dies before
        then runs it again: at-least-once either way)."""
        if self.lines is None:
            return await asyncio.to_thread(self.store.claim_next, *key)
        request_id = self.lines.pop(key)
        if request_id is None:
            return None
        item = self.held.live(request_id) or await asyncio.to_thread(self.store.get, request_id)
        if item is None:
            return None
        now = time.time()
        self.writes.later(partial(self.store.mark_claimed, request_id=request_id, now=now))
        item.status, item.started_at, item.attempts = IN_PROGRESS, now, item.attempts + 1
        self._changed(item.id)
        return item

    async def _requeue(self, item: QueuedRequest, ran: bool = True) -> None:
        """Back in line at its place (see QueueStore.requeue)."""
        await self.writes.run(partial(self.store.requeue_in, request_id=item.id, ran=ran))
        item.status, item.attempts = IN_QUEUE, item.attempts - (0 if ran else 1)
        self._changed(item.id)
        if self.lines is not None:
            self.lines.add((item.owner, item.app), item.priority, item.seq, item.id)
        else:
            self.held.drop(item.id)  # another platform may claim it now

    async def _work(self, key: tuple[str, str], dep: Deployment) -> None:
        """Wait for a runner slot, then take the next stored request (so the order and
        the positions are the queue's, whoever got a slot first)."""
        claimed: QueuedRequest | None = None
        try:
            runner = await dep.router.acquire()
        except RouterError:
            self._unclaimed[key] -= 1
            await asyncio.sleep(1.0)  # full or deleted: the dispatcher looks again
            self.kick(key)
            return
        try:
            self._unclaimed[key] -= 1
            if self._closing:
                return
            claimed = await self._claim(key)
            if claimed is not None:
                self.held.hold(claimed)
            if claimed is not None and (late := _missed_start(claimed)):
                await self.complete(claimed.id, None, [], None, late, "request_timeout")
            elif claimed is not None:
                runner = dep.router.prefer(runner, runner_hint(claimed.headers))
                task = asyncio.current_task()
                assert task is not None
                self._running[claimed.id] = task
                self._running_app[claimed.id] = key
                await self._run(dep, runner, claimed)
        finally:
            dep.router.release(runner)
            if claimed is not None:
                self._running.pop(claimed.id, None)
                self._running_app.pop(claimed.id, None)
                self._ending.pop(claimed.id, None)
                self._cancelled.discard(claimed.id)
            if key in self._dispatchers:
                self.kick(key)

    async def _run(self, dep: Deployment, runner: Runner, item: QueuedRequest) -> None:
        status, headers, body = 0, [], b""

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status, headers, body
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]
                ]
            elif message["type"] == "http.response.body":
                body += message.get("body", b"")

        timeout = (
            dep.record.options.request_timeout or self.controller.config.default_request_timeout
        )
        try:
            upstream = await _Upstream.from_scope(
                _scope(item, self.controller.config.scheme), _receiver(item.body), dep, item.id
            )
            async with asyncio.timeout(timeout):
                await self.gateway._forward(capture, runner, upstream, _Progress())
        except asyncio.CancelledError:
            if self._closing and item.id not in self._cancelled and item.id not in self._ending:
                await self._requeue(item, ran=False)  # the platform is stopping: next start
                raise
            why, kind = self._ending.get(
                item.id, ("the request was cancelled", "request_cancelled")
            )
            await self.complete(item.id, None, [], None, why, kind, runner)
            raise
        except TimeoutError:
            await self.complete(item.id, 504, [], None,
                                f"the request did not finish within request_timeout ({timeout}s)",
                                "request_timeout", runner)  # fmt: skip
            return
        except UpstreamConnectError:
            # Nothing reached a runner: back in the queue, at its place.
            self.controller.suspect(dep, runner)
            await self._requeue(item, ran=False)
            return
        except OSError as exc:
            self.controller.suspect(dep, runner)
            if not item.no_retry and item.attempts < RUNNER_LOSS_ATTEMPTS:
                await self._requeue(item)  # lost mid-request: again, on another runner
                return
            await self.complete(item.id, 502, [], None,
                                f"runner {runner.id} failed while serving the request ({exc})",
                                "runner_connection_error", runner)  # fmt: skip
            return
        if (
            status in RETRIED_STATUSES
            and not item.no_retry
            and item.attempts < RUNNER_LOSS_ATTEMPTS
        ):
            # fal's rule: a runner that is unavailable, timed out or overloaded gets the
            # request run again (the next free slot), up to the bound; the last answer stays.
            await self._requeue(item)
            return
        error = error_type = None
        if status >= 400:
            error, error_type = _error_of(headers, body, status)
        await self.complete(item.id, status, headers, body, error, error_type, runner)

    async def cancel(self, request_id: str) -> tuple[int, str]:
        item = await self.get(request_id)
        if item is None:
            return 404, "NOT_FOUND"
        if item.status == COMPLETED:
            return 400, "ALREADY_COMPLETED"
        task = self._running.get(request_id)
        if task is not None:
            self._cancelled.add(request_id)
            task.cancel()  # the runner sees its connection close
        else:
            if self.lines is not None:
                self.lines.remove(request_id)
            await self.complete(request_id, None, [], None, "the request was cancelled",
                                "request_cancelled")  # fmt: skip
        return 202, "CANCELLATION_REQUESTED"


def _record(item: QueuedRequest, runner: Runner | None) -> RequestRecord:
    """The request record of a finished queued request: its wait is from submission to
    being claimed for a runner, its latency from submission to completion."""
    finished = item.completed_at or time.time()
    claimed = item.started_at if runner is not None and item.started_at else finished
    cold, cold_ms, breakdown = cold_start_of(runner, item.created_at, claimed)
    return RequestRecord(
        id=item.id, owner=item.owner, app=item.app, endpoint=item.path, method=item.method,
        kind=QUEUE, started_at=item.created_at, finished_at=finished,
        latency_ms=max(0.0, finished - item.created_at) * 1000,
        queue_wait_ms=max(0.0, claimed - item.created_at) * 1000,
        status_code=item.response_status, error_type=item.error_type, error=item.error,
        revision=runner.revision if runner else None, runner_id=runner.id if runner else None,
        cold_start=cold, cold_start_ms=cold_ms, cold_breakdown=breakdown,
    )  # fmt: skip


def _missed_start(item: QueuedRequest) -> str | None:
    """fal's X-Fal-Request-Timeout: a deadline for the request to start, counted from
    its submission; why it was missed, or None."""
    raw = next((v for k, v in item.headers if k.lower() == "x-fal-request-timeout"), None)
    try:
        limit = float(raw) if raw is not None else None
    except ValueError:
        return None
    if limit is None or time.time() - item.created_at <= limit:
        return None
    return f"the request did not start within X-Fal-Request-Timeout ({limit:g}s)"


def _scope(item: QueuedRequest, scheme: str) -> dict[str, Any]:
    prefix = f"/{item.owner}/{item.app}"
    path = prefix + item.path
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in item.headers]
    headers.append((b"content-length", str(len(item.body)).encode()))
    return {"type": "http", "method": item.method, "path": path, "raw_path": path.encode(),
            "query_string": item.query.encode(), "headers": headers, "scheme": scheme}  # fmt: skip


def _receiver(body: bytes) -> Any:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _error_of(headers: list[tuple[str, str]], body: bytes, status: int) -> tuple[str, str]:
    error_type = next((v for k, v in headers if k.lower() == "x-fal-error-type"), f"http_{status}")
    try:
        detail = json.loads(body).get("detail", "")
    except (ValueError, AttributeError):
        detail = body[:500].decode("utf-8", "replace")
    return (
        detail if isinstance(detail, str) else json.dumps(detail)
    ) or f"HTTP {status}", error_type


def runner_hint(headers: list[tuple[str, str]]) -> str | None:
    """A stored request's X-Fal-Runner-Hint: it waited for any slot in order, and then
    moves to the hint's runner if that one has a slot free."""
    for name, value in headers:
        if name.lower() == "x-fal-runner-hint":
            return value.strip()[:256] or None
    return None


def queue_router(service: QueueService, owner_apps: Any) -> APIRouter:
    """fal's queue REST API. `owner_apps` resolves (owner, app) to a Deployment."""
    router = APIRouter()

    async def status_of(request: Request, item: QueuedRequest, logs: bool) -> dict[str, Any]:
        return await service.status_view(str(request.base_url), item, logs)

    async def find(
        owner: str, app: str, request_id: str, bodies: bool = True
    ) -> QueuedRequest | None:
        read = service.get if bodies else service.status_of
        item = await read(request_id)
        return item if item and (item.owner, item.app) == (owner, app) else None

    @router.get("/queue/{owner}/{app}/requests/{request_id}/status")
    async def status(
        owner: str, app: str, request_id: str, request: Request, logs: bool = False
    ) -> Response:
        item = await find(owner, app, request_id, bodies=False)
        if item is None:
            return JSONResponse({"detail": f"no request {request_id!r}"}, status_code=404)
        code = 200 if item.status == COMPLETED else 202
        return JSONResponse(await status_of(request, item, bool(logs)), status_code=code)

    @router.get("/queue/{owner}/{app}/requests/{request_id}/status/stream")
    async def status_stream(
        owner: str, app: str, request_id: str, request: Request, logs: bool = False
    ) -> Response:
        if await find(owner, app, request_id, bodies=False) is None:
            return JSONResponse({"detail": f"no request {request_id!r}"}, status_code=404)

        async def events() -> AsyncIterator[bytes]:
            last = None
            with service.watching(request_id) as changed:
                while True:
                    changed.clear()  # before reading: a change from here on wakes us
                    item = await service.status_of(request_id)
                    if item is None:
                        return
                    current = await status_of(request, item, bool(logs))
                    if current != last:
                        yield f"data: {json.dumps(current)}\n\n".encode()
                        last = current
                    if item.status == COMPLETED:
                        return
                    # Woken by a change here; else a look every 0.1 s (positions move,
                    # another platform may have changed it).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), 0.1)

        return StreamingResponse(events(), media_type="text/event-stream")

    @router.get("/queue/{owner}/{app}/requests/{request_id}")
    async def result(owner: str, app: str, request_id: str) -> Response:
        item = await find(owner, app, request_id)
        if item is None:
            return JSONResponse({"detail": f"no request {request_id!r}"}, status_code=404)
        if item.status != COMPLETED:
            return JSONResponse({"detail": f"the request is {item.status}"}, status_code=400)
        if item.response_status is None:
            return JSONResponse({"detail": item.error, "error_type": item.error_type},
                                status_code=500 if item.error_type != "request_cancelled" else 400,
                                headers={"x-fal-error-type": item.error_type or ""})  # fmt: skip
        keep = {"content-type", "x-fal-error-type"}
        headers = {k: v for k, v in item.response_headers if k.lower() in keep}
        return Response(
            item.response_body or b"", status_code=item.response_status, headers=headers
        )

    @router.put("/queue/{owner}/{app}/requests/{request_id}/cancel")
    async def cancel(owner: str, app: str, request_id: str) -> Response:
        if await find(owner, app, request_id, bodies=False) is None:
            return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
        code, word = await service.cancel(request_id)
        return JSONResponse({"status": word}, status_code=code)

    return router
