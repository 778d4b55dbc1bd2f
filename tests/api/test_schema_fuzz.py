"""schemathesis against the real service: gunicorn and a Celery worker on the test database, the schema read
from the live /api/v1/schema/, every operation called with a team's API key. No answer may be a 5xx, and
every answer must keep to the schema: a documented status, its media type, its body's schema, its headers.

The seed and the number of examples are fixed, so a run is repeatable (docs/testing.md)."""

import subprocess
import sys
from pathlib import Path

import pytest
import requests
import schemathesis
from django.conf import settings
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.transport.serialization import serialize_yaml

from tests.conftest import wait_until
from tests.factories import TeamFactory
from tests.integration.conftest import service_env, stop_process_group
from tests.integration.test_make_run import free_port
from workflows.api.schema import RUN_EXAMPLE, WORKFLOW_EXAMPLE_YAML
from workflows.models import LedgerEntry, Run, WorkflowVersion
from workflows.services.teams import api_key_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

# Per operation: up to this many requests from each of its examples, and per kind of data.
EXAMPLES = 3
MAX_EXAMPLES = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


class FuzzTeam:
    """A team's key, and the ids of objects of the team that the fuzzing may reach."""

    def __init__(self, base_url: str, key: str):
        self.base_url = base_url
        self.key = key
        self.ids: dict[str, int] = {}
        self.stopped_run: int | None = None

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.base_url + path, headers=self.auth, timeout=10, **kwargs)


def _start(argv: list[str], *, env: dict, log_path: Path) -> subprocess.Popen:
    log = log_path.open("w")
    return subprocess.Popen(argv, cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=10)
    except (requests.ConnectionError, requests.Timeout):
        return False
    return True


@pytest.fixture(scope="module")
def live_service(django_db_setup, tmp_path_factory):
    """gunicorn and a Celery worker on the test database, for every operation's test in turn."""
    var_dir = tmp_path_factory.mktemp("fuzz")
    env = {**service_env(var_dir), "DJANGO_STATIC_ROOT": str(var_dir / "static")}
    port = free_port()
    # Without a control socket: every gunicorn's is at one path in the home directory by default.
    web = _start(
        [sys.executable, "-m", "gunicorn", "budgetsvc.asgi", "--config", "python:budgetsvc.gunicorn",
         "--bind", f"127.0.0.1:{port}", "--workers", "2", "--no-control-socket"],
        env=env,
        log_path=var_dir / "web.log",
    )  # fmt: skip
    worker = _start(
        [sys.executable, "-m", "celery", "-A", "budgetsvc", "worker", "--pool", "solo", "--loglevel", "INFO",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env=env,
        log_path=var_dir / "worker.log",
    )  # fmt: skip
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(base_url + "/api/v1/"), timeout=60, message="gunicorn to answer")
        yield base_url
    finally:
        stop_process_group(web)
        stop_process_group(worker)
        print((var_dir / "web.log").read_text()[-5000:])  # pytest shows it when a test failed


@pytest.fixture
def fuzz_team(transactional_db, live_service) -> FuzzTeam:
    """A team with a key and the schema's example workflow, with a completed run and one stopped by its
    budget, so that the fuzzing reaches real objects too."""
    _, key = api_key_create(team=TeamFactory(name="fuzz"), name="fuzz")
    team = FuzzTeam(live_service, key)
    created = team.call("POST", "/api/v1/workflows", json={"definition": WORKFLOW_EXAMPLE_YAML})
    assert created.status_code == 201, created.text
    completed = team.call("POST", "/api/v1/runs", json=RUN_EXAMPLE).json()
    stopped = team.call("POST", "/api/v1/runs", json={**RUN_EXAMPLE, "limits": {"budget_usd": "0.01", "budget_mode": "enforce"}}).json()
    for run, status in ((completed, "completed"), (stopped, "budget_exceeded")):
        wait_until(
            lambda: team.call("GET", f"/api/v1/runs/{run['id']}").json()["status"] == status,
            timeout=60,
            message=f"run {run['id']} to be {status}",
        )
    team.ids = {
        "workflows": created.json()["id"],
        "runs": completed["id"],
        "ledger": LedgerEntry.objects.filter(run_id=completed["id"]).values_list("pk", flat=True).first(),
    }
    team.stopped_run = stopped["id"]
    return team


@schemathesis.serializer("application/yaml")
def raw_yaml(ctx, value):
    # The schema says a YAML upload is a string, the document's text: sent as it is, not dumped as YAML again.
    return value.encode("utf-8") if isinstance(value, str) else serialize_yaml(value)["data"]


def strategies_for(operation, team: FuzzTeam) -> list[tuple[str, SearchStrategy, int]]:
    """What to send an operation, and how many of each: the schema's examples, then data that fits the
    schema and data that does not, with drawn ids (nearly always a 404) and with the team's objects."""
    strategies = [("example", strategy, EXAMPLES) for strategy in operation.get_strategies_from_examples()]
    ids = [None]
    if "{id}" in operation.path:
        resource = operation.path.removeprefix("/api/v1/").split("/")[0]
        ids += [team.ids[resource], *([team.stopped_run] if resource == "runs" else [])]
    for id_ in ids:
        fixed = {"path_parameters": {"id": id_}} if id_ is not None else {}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies.append((f"{mode.value} id={id_}", operation.as_strategy(mode, **fixed), MAX_EXAMPLES))
    return strategies


def answered_by_gunicorn(response: requests.Response) -> bool:
    """gunicorn's own refusal of a request line or headers over its limits, made before the service
    sees the request (docs/api.md#limits-of-the-web-server): no X-Request-ID, which the service puts
    on every answer."""
    return response.status_code in (400, 414) and "X-Request-ID" not in response.headers


def test_every_operation_keeps_to_the_schema(fuzz_team):
    schema = schemathesis.openapi.from_url(fuzz_team.base_url + "/api/v1/schema/?format=json")
    failures: dict[str, str] = {}
    for operation in (result.ok() for result in schema.get_all_operations()):
        for label, strategy, examples in strategies_for(operation, fuzz_team):

            @hypothesis_settings(
                max_examples=examples,
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],
            )
            @given(case=strategy)
            def check(case):
                try:
                    response = case.call(base_url=fuzz_team.base_url, headers=fuzz_team.auth)
                    if answered_by_gunicorn(response):
                        return
                    case.validate_response(response, checks=CHECKS, headers=fuzz_team.auth)
                except (Exception, FailureGroup) as failure:  # every failure is reported below, with its case
                    first_line = str(failure).strip().splitlines()[0] if str(failure).strip() else type(failure).__name__
                    failures.setdefault(f"{operation.label} [{label}]: {first_line}", f"{failure}\n{case.as_curl_command()}")

            try:
                check()
            except Unsatisfiable:
                pass  # an operation with nothing to send wrong (no parameters, no body) has no negative data
    assert not failures, "\n\n".join(failures.values())
    # The schema's examples got past validation: its workflow was uploaded again, and its run started.
    assert WorkflowVersion.objects.filter(workflow_id=fuzz_team.ids["workflows"]).count() > 1
    assert Run.objects.filter(team__name="fuzz").count() > 2
