"""The official `fal-client`, unchanged, against a tidal platform served over https.

fal-client builds every URL as `https://{FAL_RUN_HOST}/...` and
`https://{FAL_QUEUE_RUN_HOST}/...`, read once when `fal_client` is imported; the
host may carry a path, so `FAL_QUEUE_RUN_HOST=HOST:PORT/queue` reaches tidal's
queue API. So the platform serves TLS (a CA made here, trusted through
`SSL_CERT_FILE`), and `fal_client` is imported afresh with those variables set.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

from tidal.testing import PlatformProcess, start_platform, wait_for
from tidal.tls import ca_bundle, make_local_certificate

pytestmark = pytest.mark.slow

ECHO = Path(__file__).parent / "apps" / "echo"
PROXY = Path(__file__).parent / "apps" / "proxy"
REALTIME = Path(__file__).parent / "apps" / "fal_realtime"
ROOMY = "[host]\ncpus = 64\nmemory_mb = 131072\n"


@pytest.fixture(scope="module")
def tls_platform(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PlatformProcess, Path]]:
    """A platform on https, its apps deployed; with the CA bundle its clients trust."""
    data_dir = tmp_path_factory.mktemp("tls-platform")
    cert = make_local_certificate(data_dir / "tls")
    bundle = ca_bundle(cert.ca_file, data_dir / "tls" / "bundle.pem")
    (data_dir / "tidal.toml").write_text(
        f"tls_certfile = {json.dumps(str(cert.cert_file))}\n"
        f"tls_keyfile = {json.dumps(str(cert.key_file))}\n" + ROOMY
    )
    with start_platform(data_dir, tls_ca=cert.ca_file) as running:
        assert running.url.startswith("https://127.0.0.1:")
        trust = {"SSL_CERT_FILE": str(bundle)}
        running.cli("deploy", "app.py::Proxy", cwd=PROXY, env=trust)
        running.cli("deploy", "scaling.py::single", cwd=ECHO, env=trust)  # one slot
        running.cli("deploy", "app.py::Realtime", cwd=REALTIME, env=trust)  # `import fal`
        yield running, bundle


@pytest.fixture(scope="module")
def fal(tls_platform: tuple[PlatformProcess, Path]) -> Iterator[Any]:
    """`fal_client`, imported with FAL_RUN_HOST/FAL_QUEUE_RUN_HOST pointing at the platform."""
    platform, bundle = tls_platform
    host = urlsplit(platform.url).netloc  # 127.0.0.1:PORT
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAL_KEY", "tidal-test-key")  # any key: this platform has no keys
        mp.setenv("FAL_RUN_HOST", host)
        mp.setenv("FAL_QUEUE_RUN_HOST", f"{host}/queue")
        mp.setenv("SSL_CERT_FILE", str(bundle))
        for name in _fal_modules():
            mp.delitem(sys.modules, name)
        import fal_client

        assert f"https://{host}/" == fal_client.client.RUN_URL_FORMAT
        yield fal_client
        # fal-client has no public close; its shared client's sockets would leak (ResourceWarning).
        shared = vars(fal_client.sync_client).get("_client")
        if shared is not None:
            shared.close()
        for name in _fal_modules():  # this configured copy must not outlive the module
            del sys.modules[name]


def _fal_modules() -> list[str]:
    return [m for m in sys.modules if m == "fal_client" or m.startswith("fal_client.")]


def completed(handle: Any, fal: ModuleType, timeout: float = 60) -> Any:
    return wait_for(
        lambda: isinstance(s := handle.status(with_logs=True), fal.Completed) and s,
        timeout=timeout,
        what=f"request {handle.request_id} to complete",
    )


def test_run_calls_an_endpoint_and_raises_its_errors(fal: Any) -> None:
    out = fal.run("local/proxy/generate", {"prompt": "a cat", "steps": 2})
    assert out["text"] == "generated: a cat x2" and out["steps"] == 2
    upper = fal.run("local/proxy", {"prompt": "a dog"}, path="/async-upper")
    assert upper["text"] == "A DOG" and upper["steps"] == 4
    assert fal.run("local/proxy/info", {}, method="GET") == {"app": "proxy"}
    with pytest.raises(fal.FalClientHTTPError) as invalid:
        fal.run("local/proxy/generate", {"prompt": ""})
    assert invalid.value.status_code == 422
    with pytest.raises(fal.FalClientHTTPError) as missing:
        fal.run("local/nothing-here/generate", {"prompt": "x"})
    assert missing.value.status_code == 404
    assert missing.value.error_type == "app_not_found"


def test_submit_status_with_logs_and_result(fal: Any) -> None:
    handle = fal.submit("local/proxy/generate", {"prompt": "a queued cat", "steps": 3})
    assert handle.response_url.startswith("https://127.0.0.1:")
    first = handle.status(with_logs=True)
    assert isinstance(first, fal.Queued | fal.InProgress | fal.Completed)
    done = completed(handle, fal)
    assert isinstance(done.logs, list) and done.error is None
    assert done.metrics["inference_time"] > 0
    expected = {"text": "generated: a queued cat x3", "steps": 3}
    result = handle.get()
    assert {k: result[k] for k in expected} == expected
    # By id, as another process would: the app id's path is left out of these URLs.
    assert fal.result("local/proxy/generate", handle.request_id) == result
    again = fal.status("local/proxy", handle.request_id)  # logs not asked for
    assert isinstance(again, fal.Completed) and again.metrics == done.metrics
    # An endpoint's own error: the request completes with it; the result raises it.
    bad = fal.submit("local/proxy/generate", {"prompt": ""})
    assert completed(bad, fal).error_type == "http_422"
    with pytest.raises(fal.FalClientHTTPError) as invalid:
        bad.get()
    assert invalid.value.status_code == 422


def test_subscribe_reports_queue_updates(fal: Any) -> None:
    updates: list[Any] = []
    enqueued: list[str] = []
    result = fal.subscribe(
        "local/proxy/generate",
        {"prompt": "a subscribed cat", "steps": 5},
        with_logs=True,
        on_enqueue=enqueued.append,
        on_queue_update=updates.append,
    )
    assert result["text"] == "generated: a subscribed cat x5" and result["steps"] == 5
    assert len(enqueued) == 1 and len(enqueued[0]) > 0
    assert updates and isinstance(updates[-1], fal.Completed)
    assert all(isinstance(u, fal.Queued | fal.InProgress | fal.Completed) for u in updates)


def test_cancel_a_queued_request(fal: Any, tls_platform: tuple[PlatformProcess, Path]) -> None:
    assert fal.run("local/single/work", {"n": "warm"})["body"]  # a ready runner
    # It holds the only slot until the test opens its gate, however slow the machine.
    busy = fal.submit("local/single", {"n": 0}, path="work?gate=busy-may-finish")
    wait_for(
        lambda: isinstance(busy.status(), fal.InProgress),
        what="the first request to run",
    )
    # Without logs asked for, an IN_PROGRESS status still parses (logs None or a list).
    assert isinstance(fal.status("local/single", busy.request_id), fal.InProgress)
    waiting = fal.submit("local/single", {"n": 1}, path="work")
    assert waiting.status() == fal.Queued(position=0)
    waiting.cancel()
    done = completed(waiting, fal)
    assert done.error_type == "request_cancelled"
    with pytest.raises(fal.FalClientHTTPError) as cancelled:
        waiting.get()
    assert cancelled.value.error_type == "request_cancelled"
    (tls_platform[0].data_dir / "data" / "busy-may-finish").touch()
    first = busy.get()
    assert json.loads(first["body"]) == {"n": 0}
    with pytest.raises(fal.FalClientHTTPError) as finished:
        busy.cancel()
    assert finished.value.status_code == 400  # ALREADY_COMPLETED
    # echo's /work records each run in the platform's shared /data folder.
    runs = (tls_platform[0].data_dir / "data" / "work-runs.txt").read_text().split()
    assert waiting.request_id not in runs  # cancelled before it ran


def test_stream_reads_server_sent_events(fal: Any) -> None:
    events = list(fal.stream("local/proxy", {"prompt": "x", "steps": 3}))
    assert events == [{"step": 0}, {"step": 1}, {"step": 2}]


def test_async_client(fal: Any) -> None:
    async def scenario() -> None:
        client = fal.AsyncClient()
        out = await client.run("local/proxy/async-upper", {"prompt": "async"})
        assert out["text"] == "ASYNC"
        handle = await client.submit("local/proxy/generate", {"prompt": "an async cat"})
        status = await handle.status(with_logs=True)
        assert isinstance(status, fal.Queued | fal.InProgress | fal.Completed)
        result = await handle.get()
        assert result["text"] == "generated: an async cat x4"
        updates: list[Any] = []
        sub = await client.subscribe(
            "local/proxy/generate", {"prompt": "a", "steps": 1}, on_queue_update=updates.append
        )
        assert sub["text"] == "generated: a x1" and isinstance(updates[-1], fal.Completed)
        events = [e async for e in client.stream("local/proxy", {"prompt": "x", "steps": 2})]
        assert events == [{"step": 0}, {"step": 1}]
        # The module-level async functions use the same configuration.
        assert (await fal.run_async("local/proxy/info", {}, method="GET")) == {"app": "proxy"}
        for used in (client, fal.async_client):  # no public close: their httpx clients
            await (await used._client).aclose()

    asyncio.run(scenario())


def test_realtime_endpoints_through_fals_realtime_client(fal: Any) -> None:
    """`@fal.realtime` endpoints, spoken to by fal-client's realtime API (msgpack over a
    websocket). `use_jwt=False`: fal-client asks rest.fal.ai for a JWT otherwise; the
    API key header goes with the websocket instead."""
    with fal.realtime("local/realtime", use_jwt=False) as connection:
        for i in range(3):
            connection.send({"prompt": f"frame {i}", "seed": i})
            assert connection.recv() == {"text": f"FRAME {i}", "seed": i}
        connection.send({"prompt": "fail"})
        with pytest.raises(fal.client.RealtimeError) as failed:
            connection.recv()
        assert failed.value.error == "INTERNAL_ERROR"
        assert "cannot draw 'fail'" in failed.value.reason
    # A server-streaming endpoint: one input, a message per item.
    with fal.realtime("local/realtime", use_jwt=False, path="/stream") as connection:
        connection.send({"prompt": "a b c"})
        got = [connection.recv() for _ in range(3)]
        assert got == [{"text": w, "seed": i} for i, w in enumerate("abc")]
        assert connection.recv() is None  # the session ends after the stream
    # The same app's HTTP endpoint, through fal-client's run.
    assert fal.run("local/realtime", {"prompt": "x", "seed": 3}) == {"text": "x", "seed": 3}
