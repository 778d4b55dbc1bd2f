"""The one-call paths of a step on PostgreSQL (workflows/services/step_functions.py): they write what
the general paths write, and they decline, writing nothing, whatever they do not handle."""

import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.factories import THREE_STEP_YAML, TeamFactory, workflow_version
from tests.invariants import assert_invariants
from workflows.models import Checkpoint, Event, LedgerEntry, Run, Step, Team
from workflows.providers import get_provider
from workflows.services import step_functions
from workflows.services.runs import run_start
from workflows.services.steps import step_begin, step_settle
from workflows.services.teams import team_budgets_update

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the step functions exist on PostgreSQL only"),
]

# What differs between two runs of the same scenario: ids, clocks, and which run a row belongs to.
VOLATILE = {
    "id", "team", "run", "step", "next_step", "workflow_version",
    "created_at", "updated_at", "started_at", "finished_at", "enqueued_at", "active_since", "active_time",
}


def values(row) -> dict:
    return {
        field.name: field.value_from_object(row) for field in row._meta.concrete_fields if field.name not in VOLATILE
    }


def snapshot(run: Run) -> dict:
    """Every row the run's steps wrote, less what differs between two runs of one scenario."""
    run.refresh_from_db()
    team = Team.objects.get(pk=run.team_id)
    return without_name(team.name, {
        "run": values(run),
        "team": {"reserved_usd": team.reserved_usd},
        "steps": [values(step) for step in run.steps.order_by("id")],
        "ledger": [values(entry) for entry in run.ledger_entries.order_by("id")],
        "events": [values(event) for event in run.events.order_by("id")],
        "checkpoints": [
            {**values(checkpoint), "next_step": checkpoint.next_step and checkpoint.next_step.sequence}
            for checkpoint in run.checkpoints.order_by("id")
        ],
        "threshold_crossings": [values(crossing) for crossing in team.threshold_crossings.order_by("id")],
        "daily_spend": list(team.daily_spend.values_list("spent_usd", flat=True)),
    })


def without_name(name: str, value):
    """`value` with the team's name taken out of its messages."""
    if isinstance(value, str):
        return value.replace(name, "<team>")
    if isinstance(value, dict):
        return {key: without_name(name, item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_name(name, item) for item in value]
    return value


def execute_run(run: Run) -> list[str]:
    """Every step of the run, in this process; whether each step's begin and settle took one call."""
    one_call = []
    while (step := run.steps.filter(status="pending").order_by("id").first()) is not None:
        attempt = step_begin(step_id=step.pk, worker="host:1")
        if attempt is None:  # stopped
            one_call.append(f"{step.agent}: admit=False settle=False")
            continue
        result = get_provider(attempt.prepared.provider).complete(attempt.prepared.request)
        with CaptureQueriesContext(connection) as queries:
            step_settle(attempt=attempt, result=result)
        # The general path inserts the ledger entry itself.
        settled_in_one_call = not any('INSERT INTO "workflows_ledgerentry"' in q["sql"] for q in queries.captured_queries)
        one_call.append(f"{step.agent}: admit={attempt.basis is not None} settle={settled_in_one_call}")
    return one_call


def scenario(settings, *, step_functions_on: bool, limits: dict, team_changes: dict) -> tuple[dict, list[str]]:
    settings.STEP_FUNCTIONS = step_functions_on
    team = TeamFactory()
    if team_changes:
        team = team_budgets_update(team=team, changes=team_changes, actor="tests")
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits=limits)
    one_call = execute_run(run)
    assert_invariants(run)
    return snapshot(run), one_call


@pytest.mark.parametrize(
    "limits,team_changes,expected_one_call",
    [
        pytest.param(
            {"budget_usd": "5", "budget_mode": "enforce"},
            {"period_budget_usd": "100", "period_mode": "enforce"},
            ["researcher: admit=True settle=True", "writer: admit=True settle=True", "reviewer: admit=True settle=True"],
            id="room-everywhere",
        ),
        pytest.param(
            # $0.60 of $0.80 crosses the 50% alert after the writer, and the reviewer's $0.90 goes over
            # the audited budget: the general paths record the crossing and report.
            {"budget_usd": "0.8", "budget_mode": "audit"},
            {},
            ["researcher: admit=True settle=True", "writer: admit=True settle=False", "reviewer: admit=False settle=False"],
            id="alert-and-audit-report",
        ),
        pytest.param(
            # The team's $0.50 a day has no room for the writer: the general path stops the run.
            {},
            {"period_budget_usd": "0.5", "period": "day", "period_mode": "enforce"},
            ["researcher: admit=True settle=False", "writer: admit=False settle=False"],
            id="team-budget-stop",
        ),
    ],
)
def test_the_one_call_paths_write_what_the_general_paths_write(settings, limits, team_changes, expected_one_call):
    general, general_calls = scenario(settings, step_functions_on=False, limits=limits, team_changes=team_changes)
    one_call, calls = scenario(settings, step_functions_on=True, limits=limits, team_changes=team_changes)

    assert calls == expected_one_call
    assert all("True" not in line for line in general_calls)
    assert one_call == general


def test_admit_declines_a_step_its_run_has_no_room_for_and_writes_nothing(team):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits={"budget_usd": "0.5"})
    step = run.steps.get()
    basis = step_functions.step_basis(step.pk)
    before = snapshot(run)

    assert step_functions.admit(basis=basis, estimate=Decimal("0.500001"), model="m", worker="w", at=timezone.now()) is None
    assert snapshot(run) == before
    assert step_functions.admit(basis=basis, estimate=Decimal("0.5"), model="m", worker="w", at=timezone.now()) == 1
    step.refresh_from_db()
    assert (step.status, step.reserved_usd, step.model, step.worker) == ("running", Decimal("0.5"), "m", "w")


def test_settle_declines_an_attempt_that_no_longer_owns_its_step(team):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits={})
    step = run.steps.get()
    superseded = step_begin(step_id=step.pk, worker="host:1")
    owner = step_begin(step_id=step.pk, worker="host:2")  # a takeover: the general path
    result = get_provider("fake").complete(superseded.prepared.request)

    assert superseded.basis is not None and owner.basis is None
    step_settle(attempt=superseded, result=result)
    run.refresh_from_db()
    assert (run.iterations, run.steps.count(), Step.objects.get(pk=step.pk).status) == (0, 1, "running")
    assert list(run.ledger_entries.values_list("attempt", flat=True)) == [1]
    assert_invariants(run)


@pytest.mark.parametrize("model", [LedgerEntry, Event, Step, Checkpoint])
def test_the_settle_function_inserts_every_column_of_the_rows_it_writes(model):
    """A column added to one of these models must be added to the function too (a new migration
    replacing it), or the one-call path would leave it empty where the general path fills it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_functiondef('workflows_step_settle'::regproc)")
        definition = cursor.fetchone()[0]
    inserted = re.search(rf"INSERT INTO {model._meta.db_table} \(([^)]*)\)", definition)
    assert inserted is not None, f"the function does not insert into {model._meta.db_table}"
    columns = {column.strip().strip('"') for column in inserted.group(1).split(",")}
    assert columns == {field.column for field in model._meta.concrete_fields if not field.primary_key}
