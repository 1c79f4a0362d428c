"""The docker backend end to end: a real dockerd (tidal.testing_docker), images built
from Dockerfiles on a debootstrap base image, runners as containers, driven through
the `tidal` CLI against a real platform process. Each test that uses the engine runs
twice: on Docker, and on Podman's Docker-compatible API."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tidal.backends.docker import OWNER_LABEL, RUNNER_LABEL
from tidal.backends.local import free_port
from tidal.runtime.channel import LISTENING_LINE
from tidal.testing import PlatformProcess, start_platform, wait_for
from tidal.testing_docker import DockerEngine

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ROOT = Path(__file__).parents[2]
APPS = Path(__file__).parent / "apps"
ROOMY = "health_check_interval_seconds = 0.5\n[host]\ncpus = 64\nmemory_mb = 131072\n"
SECRET = "s3cr3t-value-for-the-docker-test"
STEP = re.compile(r"(?i)\bstep \d+/\d+ ?:")  # Docker's "Step 1/3 :", Buildah's "STEP 1/3:"


@pytest.fixture(scope="module", params=["docker", "podman"])
def engine(request: pytest.FixtureRequest) -> DockerEngine:
    """The engine under test: Docker's dockerd, or Podman's compatible API."""
    found: DockerEngine = request.getfixturevalue(f"{request.param}_engine")
    return found


@pytest.fixture(scope="module")
def dplatform(
    engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PlatformProcess]:
    data_dir = tmp_path_factory.mktemp("dplatform")
    (data_dir / "tidal.toml").write_text(ROOMY)
    with start_platform(data_dir, env=engine.env) as running:
        yield running


@pytest.fixture(scope="module")
def engine_client(engine: DockerEngine) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=engine.host)
    try:
        yield client
    finally:
        client.close()


def deploy(platform: PlatformProcess, folder: Path, target: str, *extra: str) -> dict[str, Any]:
    done = platform.cli("deploy", target, "--json", *extra, cwd=folder, timeout=600)
    view: dict[str, Any] = json.loads(done.stdout)
    view["_stderr"] = done.stderr
    return view


def runners(platform: PlatformProcess, app: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(platform.cli("runners", "list", app, "--json").stdout)
    return out


def ready(platform: PlatformProcess, app: str) -> list[dict[str, Any]]:
    return [r for r in runners(platform, app) if r["state"] in ("idle", "running")]


def containers_of(client: docker.DockerClient, app: str) -> list[Any]:
    # all=True: gone means removed, not merely stopping (Podman lists a stopping
    # container as not running while its teardown still runs)
    found = client.containers.list(all=True, sparse=True, filters={"label": f"tidal.app={app}"})
    return list(found)


def test_health_reports_docker_usable(dplatform: PlatformProcess, engine: DockerEngine) -> None:
    with dplatform.http() as http:
        health = http.get("/api/v1/health").json()
    assert "docker" in health["backends"]["usable"], health
    described = health["backends"]["engines"]["docker"]
    name = {"docker": "Docker Engine ", "podman": "Podman Engine "}[engine.kind]
    assert described.startswith(name) and described.endswith(f" at {engine.host}"), described
    doctor = dplatform.cli("doctor", "--json", check=False)
    (check,) = [c for c in json.loads(doctor.stdout)["checks"] if c["check"] == "docker"]
    assert check["status"] == "ok" and check["detail"].startswith(described), check


def test_direct_server_in_containers_two_runners(
    dplatform: PlatformProcess, engine_client: docker.DockerClient
) -> None:
    view = deploy(dplatform, APPS / "docker_direct", "app.py::run_server")
    assert STEP.search(view["_stderr"])  # the build log streamed to the CLI
    with dplatform.http() as http:
        resp = http.get("/local/run-server/")
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"hello": "world"}
        where = http.get("/local/run-server/where").json()
        assert where["greeting"] == "bonjour from the build stage"  # multi-stage + build arg
        assert where["in_container"] is True
        # Two runners of one app at once, both serving on port 8000 in their containers.
        dplatform.cli("apps", "scale", "run-server", "--min-concurrency", "2")
        wait_for(lambda: len(ready(dplatform, "run-server")) == 2, timeout=60, what="2 runners")
        assert len(containers_of(engine_client, "run-server")) == 2
        # The user's own server cannot say when it listens: probed on a timer.
        assert {r["ready_from"] for r in ready(dplatform, "run-server")} == {"probe"}
        with ThreadPoolExecutor(8) as pool:
            seen = set(pool.map(lambda _: http.get("/local/run-server/where").json()["runner"],
                                range(40)))  # fmt: skip
        assert len(seen) == 2, seen
        dplatform.cli("apps", "scale", "run-server", "--min-concurrency", "0", "--keep-alive", "0")
        wait_for(lambda: not containers_of(engine_client, "run-server"), timeout=60,
                 what="containers gone after scale-down")  # fmt: skip


def test_redeploy_is_a_cache_hit(dplatform: PlatformProcess) -> None:
    deploy(dplatform, APPS / "docker_direct", "app.py::run_server")  # built (or cached) already
    started = time.monotonic()
    view = deploy(dplatform, APPS / "docker_direct", "app.py::run_server")
    seconds = time.monotonic() - started
    assert not STEP.search(view["_stderr"]), view["_stderr"]
    assert "(cached)" in view["_stderr"]
    print(f"redeploy with a cached image: {seconds:.2f}s")


def test_app_secrets_data_and_teardown(
    dplatform: PlatformProcess, engine_client: docker.DockerClient
) -> None:
    dplatform.cli("secrets", "set", f"DOCKER_TEST_SECRET={SECRET}")
    deploy(dplatform, APPS / "docker_app", "app.py::Stateful")
    with dplatform.http() as http:
        info = http.post("/local/stateful/info", json={}).json()
        assert info["in_container"] is True and info["built"] == "built"
        import hashlib

        assert info["secret_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest()
        (container,) = containers_of(engine_client, "stateful")
        labels = container.attrs["Labels"]
        assert SECRET not in json.dumps(labels)
        assert labels["tidal.app"] == "stateful" and labels[RUNNER_LABEL] == info["runner"]
        # Unprivileged, the machine type's limits, nothing of DATA_DIR but its own parts.
        host = engine_client.containers.get(container.id).attrs["HostConfig"]
        assert host["Privileged"] is False and not host.get("CapAdd")
        assert "no-new-privileges" in (host.get("SecurityOpt") or [])
        assert host["PidsLimit"] > 0 and host["Memory"] > 0 and host["NanoCpus"] > 0
        data_dir = str(dplatform.data_dir)
        sources = [b.split(":")[0] for b in host.get("Binds") or []]
        inside = sorted(os.path.relpath(b, data_dir).split(os.sep)[0] for b in sources
                        if b.startswith(data_dir + os.sep))  # fmt: skip
        assert set(inside) <= {"bundles", "data", "files", "logs"}, sources
        assert not any(b == data_dir for b in sources)
        # /data is shared: a second container (a new runner) reads what the first wrote.
        http.post("/local/stateful/write", json={"name": "shared.txt", "text": "from one"})
        dplatform.cli("apps", "scale", "stateful", "--min-concurrency", "2")
        wait_for(lambda: len(ready(dplatform, "stateful")) == 2, timeout=60, what="2 runners")
        texts = {}
        for _ in range(30):
            got = http.post("/local/stateful/read", json={"name": "shared.txt"}).json()
            texts[got["runner"]] = got["text"]
            if len(texts) == 2:
                break
        with ThreadPoolExecutor(4) as pool:
            for got in pool.map(
                lambda _: http.post("/local/stateful/read", json={"name": "shared.txt"}).json(),
                range(20),
            ):
                texts[got["runner"]] = got["text"]
        assert set(texts.values()) == {"from one"} and len(texts) == 2, texts
        # Scale-down stops containers gracefully: teardown() runs in each.
        ids = [r["id"] for r in ready(dplatform, "stateful")]
        dplatform.cli("apps", "scale", "stateful", "--min-concurrency", "0", "--keep-alive", "0")
        wait_for(lambda: not containers_of(engine_client, "stateful"), timeout=60,
                 what="containers gone")  # fmt: skip
    data = dplatform.data_dir / "data"
    for runner_id in ids:
        assert (data / f"teardown-{runner_id}").read_text() == "done"
    logs = dplatform.cli("logs", "stateful").stdout
    assert "setup of" in logs  # container output reaches the runner logs
    assert SECRET not in logs


def test_an_app_container_is_ready_when_its_runtime_says_so(
    dplatform: PlatformProcess, engine_client: docker.DockerClient
) -> None:
    """The runtime's listening line reaches the platform through the engine's log
    stream, and the waiting request goes at once: not found by a timer's probe."""
    dplatform.cli("secrets", "set", f"DOCKER_TEST_SECRET={SECRET}")
    deploy(dplatform, APPS / "docker_app", "app.py::Stateful")
    dplatform.cli("apps", "scale", "stateful", "--min-concurrency", "0", "--keep-alive", "300")
    wait_for(lambda: not containers_of(engine_client, "stateful"), timeout=60,
             what="no container before the cold start")  # fmt: skip
    with dplatform.http() as http:
        runner_id = http.post("/local/stateful/info", json={}).json()["runner"]
    (record,) = [r for r in runners(dplatform, "stateful") if r["id"] == runner_id]
    assert record["ready_from"] == "listening signal", record
    logs = dplatform.cli("logs", "stateful").stdout
    assert f"{LISTENING_LINE}0.0.0.0:8080" in logs
    dplatform.cli("apps", "scale", "stateful", "--keep-alive", "0")
    wait_for(lambda: not containers_of(engine_client, "stateful"), timeout=60,
             what="containers gone")  # fmt: skip


def test_from_dockerfile_ships_its_folder(dplatform: PlatformProcess) -> None:
    deploy(dplatform, APPS / "docker_ctx", "app.py::ctx_server")
    with dplatform.http() as http:
        resp = http.get("/local/ctx-server/")
        assert resp.status_code == 200
        assert "served from the build context" in resp.text


def test_dockerfile_text_with_a_context_dir_and_dockerignore(dplatform: PlatformProcess) -> None:
    """fal's from_dockerfile_str(context_dir=, dockerignore=): the folder is shipped
    less the ignored files, and the Dockerfile's COPY reads from it."""
    deploy(dplatform, APPS / "docker_str_ctx", "app.py::StaticSite", "--app-name", "static-site")
    with dplatform.http() as http:
        resp = http.post("/local/static-site/files")
        assert resp.status_code == 200, resp.text
    assert resp.json() == {"files": ["index.html", "public.secret"]}


def test_requirements_are_installed_into_the_image(dplatform: PlatformProcess) -> None:
    view = deploy(dplatform, APPS / "docker_reqs", "app.py::WithRequirements", "--app-name", "reqs")
    assert "installing the app's requirements: tabulate==0.9.0" in view["_stderr"]
    assert "Building the environment" not in view["_stderr"]  # nothing built on the host
    with dplatform.http() as http:
        resp = http.post("/local/reqs/table", json={})
        assert resp.status_code == 200, resp.text
        body = resp.json()
    assert body["table"] == "1  2" and body["version"] == "0.9.0"
    assert body["from"].startswith("/opt/tidal/requirements/")
    assert body["python"].startswith("/usr/bin/python3")  # the image's own Python


def test_fal_proxy_example_in_a_container(dplatform: PlatformProcess, tmp_path: Path) -> None:
    """The seed's proxy-app example, unchanged, given an image by a subclass."""
    shutil.copytree(ROOT / "examples" / "fal_proxy_app", tmp_path, dirs_exist_ok=True)
    (tmp_path / "docker_app.py").write_text(
        "from app import MyServerProxy\n"
        "from tidal import ContainerImage\n\n\n"
        "class DockerProxy(MyServerProxy, image=ContainerImage.from_dockerfile_str(\n"
        '    "FROM tidal-test/debian-python:bookworm\\n"\n'
        ")):\n    pass\n"
    )
    deploy(dplatform, tmp_path, "docker_app.py::DockerProxy")
    with dplatform.http() as http:
        resp = http.post("/local/docker-proxy/generate", json={"prompt": "a red square"})
        assert resp.status_code == 200, resp.text
        url = resp.json()["image"]["url"]
        image = http.get(url.replace(dplatform.url, ""))
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


def test_failing_build_names_the_step(dplatform: PlatformProcess) -> None:
    done = dplatform.cli("deploy", "build_fails.py::broken", cwd=APPS / "docker_bad", check=False)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert re.search(r"(?i)step 3/\d+ ?: RUN echo", out) and "exit 3" in out, out
    assert "about to fail: no such package" in out


def test_image_without_python_fails_clearly(dplatform: PlatformProcess) -> None:
    done = dplatform.cli("deploy", "no_python.py::no_python", cwd=APPS / "docker_bad", check=False)
    assert done.returncode != 0
    assert "no `python3`" in done.stdout + done.stderr


def test_pins_too_old_for_the_runtime_fail_the_build(dplatform: PlatformProcess) -> None:
    done = dplatform.cli("deploy", "old_pins.py::old_pins", cwd=APPS / "docker_bad", check=False)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "the image has pydantic 1.10.13" in out and "pydantic>=2.6" in out, out
    assert "Traceback" not in out


def test_local_flag_ignores_the_image(dplatform: PlatformProcess) -> None:
    done = dplatform.cli(
        "deploy", "app.py::run_server", "--local", "--app-name", "direct-local",
        cwd=APPS / "docker_direct",
    )  # fmt: skip
    assert "image is ignored" in done.stdout
    with dplatform.http() as http:
        assert http.get("/local/direct-local/").json() == {"hello": "world"}


def test_image_only_app_runs_the_images_own_command(
    dplatform: PlatformProcess, engine_client: docker.DockerClient
) -> None:
    """tidal.ImageApp: a Dockerfile whose CMD is a plain HTTP server, no Python entry and
    no tidal in the image; scaled, logged and described like any direct server."""
    folder = APPS / "image_only"
    view = deploy(dplatform, folder, "app.py::web")
    assert view["name"] == "web"
    with dplatform.http() as http:
        page = http.get("/local/web/")
        assert page.status_code == 200
        assert "served by the image's own CMD" in page.text
    (listed,) = containers_of(engine_client, "web")
    config = engine_client.containers.get(listed.id).attrs["Config"]
    assert config["Cmd"] == ["python3", "-m", "http.server", "8000"]
    assert "tidal.runtime" not in json.dumps(config.get("Entrypoint"))
    # Its output is the runner's log; its /openapi.json is discovered.
    wait_for(lambda: '"GET / HTTP/1.1" 200' in dplatform.cli("logs", "web").stdout,
             timeout=30, what="http.server's access log line")  # fmt: skip
    wait_for(
        lambda: "GET /index.html"
        in json.loads(dplatform.cli("apps", "show", "web", "--json").stdout)["endpoints"],
        timeout=30, what="the image's OpenAPI document",
    )  # fmt: skip
    # The same scaling: a floor of two runners, both serving.
    dplatform.cli("apps", "scale", "web", "--min-concurrency", "2")
    wait_for(lambda: len(ready(dplatform, "web")) == 2, timeout=120, what="two runners")
    with dplatform.http() as http:
        assert all(http.get("/local/web/").status_code == 200 for _ in range(6))
    # The command-line form, with no file at all: the same image (a cache hit).
    done = dplatform.cli("deploy", "--dockerfile", "Dockerfile", "--port", "8000",
                         "--app-name", "web-cli", cwd=folder, timeout=600)  # fmt: skip
    assert "Deployed local/web-cli" in done.stdout
    with dplatform.http() as http:
        assert "served by the image's own CMD" in http.get("/local/web-cli/").text
    refused = dplatform.cli("deploy", "app.py::web", "--local", cwd=folder, check=False)
    assert refused.returncode == 1 and "image-only" in refused.stderr
    for name in ("web", "web-cli"):
        dplatform.cli("apps", "delete", name)


def test_orphans_removed_at_platform_start(
    engine: DockerEngine, engine_client: docker.DockerClient, tmp_path: Path
) -> None:
    (tmp_path / "tidal.toml").write_text(ROOMY)
    # A container that is not the platform's must survive its start.
    stranger = engine_client.containers.run(
        "tidal-test/debian-python:bookworm", ["sleep", "300"], detach=True,
        labels={OWNER_LABEL: "someone-else", RUNNER_LABEL: "r-x"},
    )  # fmt: skip
    try:
        with start_platform(tmp_path, env=engine.env) as first:
            deploy(first, APPS / "docker_direct", "app.py::run_server")
            with first.http() as http:
                assert http.get("/local/run-server/").status_code == 200
            assert len(containers_of(engine_client, "run-server")) == 1
            os.killpg(first.process.pid, signal.SIGKILL)  # a crash: nothing cleans up
            first.process.wait()
            assert len(containers_of(engine_client, "run-server")) == 1
        with start_platform(tmp_path, env=engine.env):
            assert containers_of(engine_client, "run-server") == []
            stranger.reload()
            assert stranger.status == "running"
    finally:
        stranger.remove(force=True)


def test_no_engine_says_how_to_start_one(tmp_path: Path) -> None:
    (tmp_path / "tidal.toml").write_text(ROOMY)
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"}
    with start_platform(tmp_path, env=env) as running:
        done = running.cli("deploy", "app.py::run_server", cwd=APPS / "docker_direct", check=False)
        assert done.returncode != 0
        assert "dockerd" in done.stdout + done.stderr
        assert "--local" in done.stdout + done.stderr


REGISTRY_CONFIG = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: 0.0.0.0:5000
auth:
  htpasswd:
    realm: tidal-test
    path: /etc/registry.htpasswd
"""


@pytest.fixture(scope="module")
def registry(
    engine_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A private registry with basic auth, in a container built from Debian's
    `docker-registry` binary on the debootstrap base image (no registry is reachable)."""
    binary, htpasswd = shutil.which("docker-registry"), shutil.which("htpasswd")
    if binary is None or htpasswd is None:
        pytest.fail("install Debian's docker-registry and apache2-utils (make system-deps)")
    ctx = tmp_path_factory.mktemp("registry-image")
    shutil.copy(binary, ctx / "docker-registry")
    (ctx / "config.yml").write_text(REGISTRY_CONFIG)
    users = subprocess.run([htpasswd, "-nbB", "tester", "pw-123"], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    (ctx / "htpasswd").write_text(users)
    (ctx / "Dockerfile").write_text(
        "FROM tidal-test/debian-python:bookworm\n"
        "COPY docker-registry /usr/bin/docker-registry\n"
        "COPY config.yml /etc/registry.yml\nCOPY htpasswd /etc/registry.htpasswd\n"
        'CMD ["/usr/bin/docker-registry", "serve", "/etc/registry.yml"]\n'
    )
    engine_client.images.build(path=str(ctx), tag="tidal-test/registry:local", rm=True)
    port = free_port()
    container = engine_client.containers.run(
        "tidal-test/registry:local", detach=True, ports={"5000/tcp": ("127.0.0.1", port)}
    )
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/v2/"), timeout=30, what="registry")
        yield f"127.0.0.1:{port}"
    finally:
        container.remove(force=True)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 401  # up, and asking for auth
    except httpx.HTTPError:
        return False


def test_from_registry_pulls_with_auth_from_a_secret(
    dplatform: PlatformProcess, engine_client: docker.DockerClient, registry: str, tmp_path: Path
) -> None:
    auth = {"username": "tester", "password": "pw-123"}
    repo, tag = f"{registry}/team/served", "1"
    ref = f"{repo}:{tag}"
    image, _ = engine_client.images.build(
        fileobj=io.BytesIO(b"FROM tidal-test/debian-python:bookworm\nRUN echo pulled > /origin\n"),
        rm=True,
    )
    image.tag(repo, tag)
    for line in engine_client.images.push(ref, auth_config=auth, stream=True, decode=True):
        assert "error" not in line, line
    engine_client.images.remove(ref)  # the deploy must pull it
    (tmp_path / "app.py").write_text(
        "import subprocess, sys\nimport tidal\n\n"
        f"@tidal.function(image=tidal.ContainerImage.from_registry({ref!r}, auth='REG_AUTH'),\n"
        "                exposed_port=8000)\n"
        "def pulled() -> None:\n"
        "    subprocess.run([sys.executable, '-m', 'http.server', '8000', '--directory', '/'],\n"
        "                   check=True)\n"
    )
    missing = dplatform.cli("deploy", "app.py::pulled", cwd=tmp_path, check=False)
    assert missing.returncode != 0 and "no secret named 'REG_AUTH'" in missing.stderr
    dplatform.cli("secrets", "set", "REG_AUTH=pw-wrong")
    refused = dplatform.cli("deploy", "app.py::pulled", cwd=tmp_path, check=False)
    assert refused.returncode != 0 and "not registry credentials" in refused.stderr
    dplatform.cli("secrets", "set", "REG_AUTH=tester:wrong-password")
    refused = dplatform.cli("deploy", "app.py::pulled", cwd=tmp_path, check=False)
    assert refused.returncode != 0 and f"pulling {ref} failed" in refused.stderr
    dplatform.cli("secrets", "set", f"REG_AUTH={json.dumps(auth)}")
    view = deploy(dplatform, tmp_path, "app.py::pulled")
    assert f"pulling {ref}" in view["_stderr"]
    with dplatform.http() as http:
        assert http.get("/local/pulled/origin").text.strip() == "pulled"
