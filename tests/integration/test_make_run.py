"""`make run` end to end: the service and its worker answer, run the README's example, and stop on SIGTERM."""

import json
import os
import signal
import socket
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import wait_until
from tests.integration.conftest import service_env
from tests.providers.wire import WireServer, openai_completion, openai_usage

# `make run` installs nothing on a warm .venv, but migrates, collects and starts five processes: up
# to 180 s to answer on a loaded machine, within a test timeout above the suite's 120 s.
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(360)]

EXAMPLE = Path(settings.BASE_DIR) / "examples" / "research-pipeline.yaml"
SECRET_VARIABLES = ("DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY_FALLBACKS", "CREDENTIALS_ENCRYPTION_KEYS")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Service:
    def __init__(self, base_url: str, key: str):
        self.base_url = base_url
        self.key = key

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        request = urllib.request.Request(
            self.base_url + path,
            data=body,
            method=method,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": content_type},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def run_status(self, run_id: int) -> str:
        return self.call("GET", f"/api/v1/runs/{run_id}")[1]["status"]


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True  # 401 without a key: the service is up
    except OSError:
        return False
    return True


OPENAI_WORKFLOW = """
workflow:
  name: openai-brief
  entry_point: writer
  runtime: {provider: openai, default_model: gpt-4o-2024-08-06, max_tokens: 500}
agents:
  - name: writer
    prompt: "Write a brief."
    output: {brief: {type: string}}
"""


@pytest.fixture
def openai_server():
    with WireServer() as server:
        yield server


@pytest.fixture
def make_run(transactional_db, tmp_path, openai_server):
    port = free_port()
    # As on a fresh machine, no secret is set: make run generates its own in its var/.
    env = {
        **{name: value for name, value in service_env(tmp_path / "var").items() if name not in SECRET_VARIABLES},
        "PORT": str(port),
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
        "OPENAI_API_KEY": "sk-test-make-run-0123456789",
        "OPENAI_BASE_URL": f"{openai_server.url}/v1",
        # The stand-in listens on loopback, which the operator allows as one would a local model server.
        "OUTBOUND_ALLOWED_NETWORKS": "127.0.0.1/32",
    }
    log = (tmp_path / "make-run.log").open("w")
    process = subprocess.Popen(
        ["make", "run"], cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(base_url + "/api/v1/runs"), timeout=180, message="make run to answer")
        yield process, Service(base_url, (tmp_path / "var" / "demo-api-key").read_text().strip()), openai_server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
        print((tmp_path / "make-run.log").read_text()[-5000:])  # pytest shows it when the test failed


def test_make_run_serves_the_api_with_a_worker_and_stops_on_sigterm(make_run, tmp_path):
    process, service, openai_server = make_run
    var_dir = tmp_path / "var"
    assert stat.S_IMODE(var_dir.stat().st_mode) == 0o700
    for secret in ("secret-key", "credentials-key", "demo-api-key"):
        assert stat.S_IMODE((var_dir / secret).stat().st_mode) == 0o600, secret

    status, created = service.call("POST", "/api/v1/workflows", EXAMPLE.read_bytes(), "application/yaml")
    assert status == 201, created
    body = {"workflow": "research-pipeline", "inputs": {"topic": "x"}, "limits": {"budget_usd": 0.5, "budget_mode": "enforce"}}
    status, run = service.call("POST", "/api/v1/runs", json.dumps(body).encode())
    assert status == 202, run
    wait_until(lambda: service.run_status(run["id"]) == "budget_exceeded", message="the enforce stop")

    status, _ = service.call("POST", f"/api/v1/runs/{run['id']}/resume", json.dumps({"budget_usd": "1"}).encode())
    assert status == 202
    wait_until(lambda: service.run_status(run["id"]) == "completed", message="the resumed run to complete")
    assert service.call("GET", f"/api/v1/runs/{run['id']}")[1]["spent_usd"] == "0.900000"

    run_an_openai_workflow(service, server=openai_server)

    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)
    wait_until(lambda: not group_alive(process.pid), message="the web server and the worker to stop")


def run_an_openai_workflow(service: Service, *, server: WireServer) -> None:
    """OPENAI_BASE_URL points at a wire-compatible server: the workflow's spend is the usage it reported
    times the shipped prices of gpt-4o, which the dated snapshot name is an alias of."""
    server.script(openai_completion(json.dumps({"brief": "Done."}), openai_usage(prompt=3000, completion=400, cached=2048)))
    status, created = service.call("POST", "/api/v1/workflows", OPENAI_WORKFLOW.encode(), "application/yaml")
    assert status == 201, created
    status, run = service.call("POST", "/api/v1/runs", json.dumps({"workflow": "openai-brief"}).encode())
    assert status == 202, run
    wait_until(lambda: service.run_status(run["id"]) in ("completed", "failed"), message="the openai run to end")
    body = service.call("GET", f"/api/v1/runs/{run['id']}")[1]
    assert body["status"] == "completed", body["error"]
    # 952 uncached x $2.50 + 2,048 cached x $1.25 + 400 output x $10, per 1M
    assert body["spent_usd"] == "0.008940"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
