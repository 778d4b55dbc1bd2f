"""One team cannot stall the others: bounded definitions, templates, for_each sources and locks."""

import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from budgetsvc.celery import app
from tests.conftest import client_for, wait_for_run, wait_until
from tests.definition.test_parse import fat_laughs
from tests.factories import TeamFactory, workflow_version
from tests.invariants import assert_invariants
from tests.services.test_groups import begin, run_step, settle, step_of
from tests.services.test_groups import start as start_groups
from workflows.definition import configure_render_budget
from workflows.models import ApiKey, Run, Workflow, WorkflowVersion
from workflows.services.runs import run_start
from workflows.services.teams import api_key_create


@pytest.mark.django_db
def test_a_yaml_alias_bomb_is_refused_by_its_expanded_size_and_leaves_no_row(api):
    source = "workflow: {name: bomb, entry_point: a}\nagents: [{name: a, prompt: hi}]\n" + fat_laughs()

    response = api.post("/api/v1/workflows", {"definition": source}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "definition_invalid"
    assert error["details"] == [
        {"path": "definition", "message": "expands to more than 1,048,576 bytes (the expanded size limit)"}
    ]
    assert not Workflow.objects.exists() and not WorkflowVersion.objects.exists()


def hold_key_row_and_write_lock(api_key_id: int, held: threading.Event, release: threading.Event) -> None:
    """Another writer: on SQLite it holds the database's write lock, on PostgreSQL the key's row too."""
    try:
        with transaction.atomic():
            ApiKey.objects.select_for_update().filter(pk=api_key_id).update(name="busy")
            held.set()
            release.wait(timeout=30)
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_read_never_waits_for_the_write_lock_to_note_its_key_was_used(team):
    api_key, raw_key = api_key_create(team=team, name="reader")
    stale = timezone.now() - timedelta(hours=1)
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=stale)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_key_row_and_write_lock, args=(api_key.pk, held, release))
    holder.start()
    try:
        assert held.wait(timeout=10)
        started = time.monotonic()
        response = client.get("/api/v1/team")
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()

    assert response.status_code == 200
    assert waited < 2  # the holder lets go after 30 s
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == stale  # skipped, not waited for
    assert client.get("/api/v1/team").status_code == 200
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at > stale  # the next request records it


# About 8 s of CPU on a fast core (8 ms an outer round), inside the render budget the test gives it.
SLOW_TEMPLATE = "{% for i in range(1000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"

SLOW_PROMPT_YAML = """
workflow:
  name: slow-prompt
  entry_point: thinker
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 100}
agents:
  - name: thinker
    prompt: "SLOW Think."
    mock: {output_tokens: 100}
""".replace("SLOW", SLOW_TEMPLATE)

SLOW_OUTPUT_YAML = """
workflow:
  name: slow-output
  entry_point: thinker
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 100}
agents:
  - name: thinker
    prompt: "Think."
    mock: {output_tokens: 100}
output:
  summary: "SLOW{{ thinker.output }}"
""".replace("SLOW", SLOW_TEMPLATE)

QUICK_YAML = """
workflow:
  name: quick
  entry_point: answerer
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 100}
agents:
  - name: answerer
    prompt: "Answer."
    mock: {output_tokens: 100}
"""


@pytest.fixture
def worker(transactional_db):
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=60) as running:
        yield running


@pytest.fixture
def long_render_budget():
    configure_render_budget(seconds=120)
    yield
    configure_render_budget(seconds=settings.TEMPLATE_RENDER_SECONDS)


def rendering_elsewhere() -> bool:
    """Whether another thread of this process (the worker) is inside a template render right now."""
    me = threading.get_ident()
    for thread_id, frame in sys._current_frames().items():  # noqa: SLF001 - a test's window on the worker
        while thread_id != me and frame is not None:
            if frame.f_code.co_filename.endswith("definition/templates.py") and frame.f_code.co_name == "render":
                return True
            frame = frame.f_back
    return False


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("source", [SLOW_PROMPT_YAML, SLOW_OUTPUT_YAML], ids=["the step's prompt", "the run's output"])
def test_a_slow_render_holds_no_lock_that_other_teams_or_its_own_team_wait_for(
    team, api, worker, long_render_budget, settings, source
):
    other = client_for(TeamFactory(name="bystander"))
    slow = api.post("/api/v1/workflows", {"definition": source}, format="json").json()["id"]
    own_quick = api.post("/api/v1/workflows", {"definition": QUICK_YAML}, format="json").json()["id"]
    other_quick = other.post("/api/v1/workflows", {"definition": QUICK_YAML}, format="json").json()["id"]

    slow_run = api.post("/api/v1/runs", {"workflow": slow}, format="json").json()["id"]
    wait_until(rendering_elsewhere, timeout=30, message="the worker to render the slow template")
    # Until the slow run ends, keep writing beside it: another team's POST /runs (SQLite's write lock
    # would hold it up) and a cancel in the same team (PostgreSQL's team row lock would).
    waits, probes_while_rendering, other_runs = [], 0, []
    while not Run.objects.filter(pk=slow_run, status__in=TERMINAL).exists():
        rendering = rendering_elsewhere()
        started, other_waited = timed(lambda: other.post("/api/v1/runs", {"workflow": other_quick}, format="json"))
        own_run = api.post("/api/v1/runs", {"workflow": own_quick}, format="json").json()["id"]
        cancelled, own_waited = timed(lambda: api.post(f"/api/v1/runs/{own_run}/cancel", {}, format="json"))
        assert (started.status_code, cancelled.status_code) == (202, 200), (started.json(), cancelled.json())
        waits.append(max(other_waited, own_waited))
        probes_while_rendering += rendering and rendering_elsewhere()
        other_runs.append(started.json()["id"])
        time.sleep(0.5)

    assert max(waits) < 2, waits
    assert probes_while_rendering >= 3  # the probes really ran beside the renders
    run = Run.objects.get(pk=slow_run)
    assert (run.status, run.spent_usd, run.reserved_usd) == ("completed", Decimal("0.010000"), 0)
    for other_run in other_runs:
        assert wait_for_run(other_run, "completed", timeout=60).spent_usd == Decimal("0.010000")
    assert_invariants(run, *Run.objects.filter(pk__in=other_runs))


TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")


# --- for_each sources are capped, and branch rows are created as slots open -------------------

FOR_EACH_INPUT_YAML = """
workflow:
  name: each-input
  entry_point: each
  runtime: {provider: fake, default_model: sim-model, max_tokens: 1000}
  input:
    items: {type: array, required: true}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 100}
agents:
  - name: tally
    prompt: "{{ each.count }} items"
    mock: {output_tokens: 1000}
for_each:
  - name: each
    source: workflow.input.items
    max_concurrent: 3
    agent:
      prompt: "Item {{ item }}"
      mock: {output_tokens: 1000}
    routes: [{to: tally}]
"""


@pytest.mark.django_db
def test_a_for_each_input_over_the_limit_is_refused_at_post_runs_and_leaves_no_row(api, settings):
    settings.FOR_EACH_MAX_ITEMS = 5
    workflow = api.post("/api/v1/workflows", {"definition": FOR_EACH_INPUT_YAML}, format="json").json()["id"]

    refused = api.post("/api/v1/runs", {"workflow": workflow, "inputs": {"items": list(range(6))}}, format="json")
    accepted = api.post("/api/v1/runs", {"workflow": workflow, "inputs": {"items": list(range(5))}}, format="json")

    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "type": "validation_error",
        "message": "for_each 'each' would run over 6 items; the limit is 5.",
        "details": [{"path": "inputs.items", "message": "more than 5 items (FOR_EACH_MAX_ITEMS)"}],
    }
    assert accepted.status_code == 202
    assert list(Run.objects.values_list("pk", flat=True)) == [accepted.json()["id"]]


@pytest.mark.django_db
def test_a_for_each_output_over_the_limit_fails_the_run_before_any_branch(team, settings):
    settings.FOR_EACH_MAX_ITEMS = 2
    run = start_groups(team)
    run_step(step_of(run, "planner"), {"topics": ["cost", "latency", "safety"]})
    run_step(step_of(run, "security_review", "security_review"), {"verdict": "safe"})
    run_step(step_of(run, "style_review", "style_review"), {"verdict": "tidy"})

    run.refresh_from_db()
    assert (run.status, run.error["type"]) == ("failed", "ForEachSourceError")
    assert run.error["message"] == (
        "template for_each 'analyses' source failed: 'planner.output.topics' has 3 items; "
        "the limit is 2 (FOR_EACH_MAX_ITEMS)"
    )
    assert not run.steps.filter(group="analyses").exists()
    assert (run.spent_usd, run.ledger_entries.count()) == (Decimal("0.300000"), 3)
    assert_invariants(run)


@pytest.mark.django_db
def test_entering_a_long_for_each_creates_only_the_branches_that_have_a_slot(api, settings):
    settings.FOR_EACH_MAX_ITEMS = 200_000
    workflow = api.post("/api/v1/workflows", {"definition": FOR_EACH_INPUT_YAML}, format="json").json()["id"]

    body = {"workflow": workflow, "inputs": {"items": list(range(200_000))}}
    response, waited = timed(lambda: api.post("/api/v1/runs", body, format="json"))

    assert response.status_code == 202
    run = Run.objects.get(pk=response.json()["id"])
    assert list(run.steps.order_by("branch_index").values_list("branch_index", "status")) == [
        (0, "pending"),
        (1, "pending"),
        (2, "pending"),
    ]
    assert waited < 10  # was 200,000 rows in the request's transaction


@pytest.mark.django_db
def test_each_ended_branch_creates_the_next_and_the_group_ends_after_the_last_item(team, settings):
    version = workflow_version(team=team, source=FOR_EACH_INPUT_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"items": ["a", "b", "c", "d", "e"]})
    first = begin(step_of(run, "each", "0"))
    assert run.steps.count() == 3

    settle(first, {"n": 0})
    assert list(run.steps.order_by("branch_index").values_list("branch_key", "status", "sequence")) == [
        ("0", "succeeded", 1),
        ("1", "pending", 2),
        ("2", "pending", 3),
        ("3", "pending", 4),
    ]
    for key in ("1", "2", "3"):
        run_step(step_of(run, "each", key), {"n": int(key)})
    assert run.steps.count() == 5
    run_step(step_of(run, "each", "4"), {"n": 4})

    assert run.checkpoints.latest().outputs["each"] == {
        "outputs": [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}],
        "errors": {},
        "count": 5,
    }
    tally = begin(step_of(run, "tally"))
    assert (tally.prepared.request.prompt, run.steps.count()) == ("5 items", 6)
    settle(tally, {"ok": True})
    run.refresh_from_db()
    assert (run.status, run.spent_usd, run.iterations) == ("completed", Decimal("0.600000"), 6)
    assert_invariants(run)



@pytest.mark.django_db
def test_a_group_already_entered_keeps_all_its_items_when_the_limit_is_lowered(team, settings):
    version = workflow_version(team=team, source=FOR_EACH_INPUT_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"items": ["a", "b", "c", "d", "e"]})
    settings.FOR_EACH_MAX_ITEMS = 2  # an operator lowers it while the group runs

    for key in ("0", "1", "2", "3", "4"):
        run_step(step_of(run, "each", key), {"n": int(key)})

    assert run.checkpoints.latest().outputs["each"]["count"] == 5
    assert step_of(run, "tally").status == "pending"
    assert_invariants(run)

# An entry point with nothing to run goes on to its routes inside run_start's transaction: twenty
# conditions of about 20 ms of CPU each.
EMPTY_ENTRY_SLOW_ROUTES_YAML = FOR_EACH_INPUT_YAML.replace(
    "    routes: [{to: tally}]",
    "    routes:\n" + '      - {to: tally, when: "{{ (range(99999)|sum) < 0 }}"}\n' * 20 + "      - {to: tally}",
)


@pytest.fixture
def short_render_budget():
    configure_render_budget(seconds=0.2)
    yield
    configure_render_budget(seconds=settings.TEMPLATE_RENDER_SECONDS)


@pytest.mark.django_db
def test_the_routes_a_run_start_renders_share_one_budget(team, short_render_budget):
    version = workflow_version(team=team, source=EMPTY_ENTRY_SLOW_ROUTES_YAML)

    run = run_start(team=team, workflow=version.workflow.name, inputs={"items": []})

    run.refresh_from_db()
    assert (run.status, run.error["type"]) == ("failed", "TemplateError")
    assert "TEMPLATE_RENDER_SECONDS" in run.error["message"]
    assert not run.steps.exists()
