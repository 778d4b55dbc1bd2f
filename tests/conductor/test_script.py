"""Conductor's `script` step: refused at upload unless an operator allowed the team, then run on a real
worker, its JSON output laid over {stdout, stderr, exit_code} for the routes to read."""

from decimal import Decimal

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from workflows.errors import DefinitionInvalid
from workflows.models import LedgerEntry
from workflows.services.steps.kinds import PreparedStep, StepAttempt, StepWorkFailed
from workflows.services.steps.kinds.script import ScriptKind
from workflows.services.workflows import workflow_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def scripts_on(settings):
    settings.SCRIPT_STEPS_ENABLED = True  # the operator's switch; each test decides the team's

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

CHECKED = """
workflow:
  name: checked
  entry_point: count
  input: {words: {type: string, required: true}}
  runtime: {provider: fake, default_model: sim-model}
agents:
  - name: count
    type: script
    command: sh
    args: ["-c", "wc -w | tr -d ' ' | sed 's/.*/{\\"words\\": &}/'"]
    stdin: "{{ workflow.input.words }}"
    timeout: 10
    routes:
      - {to: long, when: "{{ count.output.words > 3 }}"}
      - {to: short}
  - name: long
    type: set
    value: long
  - name: short
    type: set
    value: short
"""


def test_a_script_runs_on_a_worker_and_its_json_output_routes_the_run(api, team, celery_worker):
    team.may_run_scripts = True
    team.save(update_fields=["may_run_scripts"])
    assert api.post("/api/v1/workflows", {"definition": CHECKED}, format="json").status_code == 201

    response = api.post("/api/v1/runs", {"workflow": "checked", "inputs": {"words": "one two three four five"}}, format="json")
    run = wait_for_run(response.json()["id"], *TERMINAL)

    assert run.status == "completed", run.error
    assert run.steps.get(agent="count").output == {"stdout": '{"words": 5}\n', "stderr": "", "exit_code": 0, "words": 5}
    assert run.steps.filter(agent="long").exists() and not run.steps.filter(agent="short").exists()
    assert run.iterations == 2 and not LedgerEntry.objects.filter(run=run).exists()
    assert_invariants(run)


def test_a_team_not_allowed_scripts_is_refused_at_upload_naming_the_setting(team, settings):
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=CHECKED)

    [detail] = refused.value.details
    assert detail["path"] == "agents[0].type" and "'may run scripts'" in detail["message"]

    settings.SCRIPT_STEPS_ENABLED = False
    team.may_run_scripts = True
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=CHECKED)
    assert "SCRIPT_STEPS_ENABLED" in refused.value.details[0]["message"]


def test_a_team_that_lost_the_right_is_refused_at_run_start_and_a_script_already_admitted_fails(api, team):
    team.may_run_scripts = True
    team.save(update_fields=["may_run_scripts"])
    workflow_create(team=team, definition=CHECKED)
    team.may_run_scripts = False
    team.save(update_fields=["may_run_scripts"])

    response = api.post("/api/v1/runs", {"workflow": "checked", "inputs": {"words": "a"}}, format="json")

    assert response.status_code == 400 and "'may run scripts'" in response.json()["error"]["message"]
    assert not team.runs.exists()
    # A step admitted before the right went fails when it comes to run, resumably.
    prepared = PreparedStep(kind="script", estimate_usd=Decimal("0"), data={"call": {}, "output": None})
    attempt = StepAttempt(team_id=team.pk, run_id=0, step_id=0, number=1, prepared=prepared)
    with pytest.raises(StepWorkFailed, match="no longer allowed for this team"):
        ScriptKind().run(attempt)


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ("env: {TOKEN: '${API_TOKEN}'}", "agents[0].env.TOKEN", "worker's environment"),
        ("env: {'1BAD': x}", "agents[0].env.1BAD", "environment variable name"),
        ("env: {LD_PRELOAD: /tmp/x.so}", "agents[0].env.LD_PRELOAD", "set by the service"),
        ("env: {PATH: /tmp}", "agents[0].env.PATH", "set by the service"),
        ("working_dir: /srv", "agents[0].working_dir", "scratch directory"),
        ("timeout: 0", "agents[0].timeout", ""),
        ("args: [1]", "agents[0].args[0]", "template string"),
    ],
)
def test_a_script_with_a_mistake_is_refused_at_upload_naming_it(team, fields, path, message):
    team.may_run_scripts = True
    team.save(update_fields=["may_run_scripts"])
    source = f"workflow: {{name: w, entry_point: s, runtime: {{provider: fake}}}}\nagents:\n  - name: s\n    type: script\n    command: echo\n    {fields}\n"
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=source)
    assert any(d["path"] == path and message in d["message"] for d in refused.value.details), refused.value.details


TYPED = """
workflow:
  name: typed
  entry_point: detect
  input: {printed: {type: string, required: true}}
  runtime: {provider: fake}
agents:
  - name: detect
    type: script
    command: sh
    args: ["-c", "echo '{{ workflow.input.printed }}'"]
    output:
      phase: {type: string}
      issues: {type: integer}
"""


@pytest.mark.parametrize(
    ("printed", "status", "error"),
    [
        ('{"phase": "planning", "issues": 3}', "completed", None),
        ('{"phase": "planning"}', "failed", "output.issues is missing"),
        ("not json", "failed", "stdout is not a JSON object"),
    ],
)
def test_a_script_with_an_output_schema_must_print_an_object_that_matches_it(api, team, celery_worker, printed, status, error):
    team.may_run_scripts = True
    team.save(update_fields=["may_run_scripts"])
    workflow_create(team=team, definition=TYPED)

    response = api.post("/api/v1/runs", {"workflow": "typed", "inputs": {"printed": printed}}, format="json")
    run = wait_for_run(response.json()["id"], *TERMINAL)

    assert run.status == status, run.error
    if error:
        assert run.error["type"] == "ScriptOutputError" and error in run.error["message"]
