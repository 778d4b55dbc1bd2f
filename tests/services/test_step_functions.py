"""The one-call paths of a step on PostgreSQL (workflows/services/step_functions.py): they write what
the general paths write, and they decline, writing nothing, whatever they do not handle."""

import itertools
import logging
import re
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.factories import FAN_OUT_YAML, LOOP_YAML, THREE_STEP_YAML, UNPRICED_YAML, TeamFactory, workflow_version
from tests.invariants import assert_invariants
from workflows.models import Checkpoint, Event, LedgerEntry, Run, Step, Team
from workflows.providers import ProviderError, Usage, get_provider
from workflows.services import step_functions
from workflows.services.budgets import gate_input
from workflows.services.gate import gate_decide
from workflows.services.runs import run_cancel, run_resume, run_start
from workflows.services.steps import step_begin, step_provider_failed, step_settle
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


# Event payloads' clocks and the retry's jitter.
VOLATILE_PAYLOAD = {"at", "retry_in_seconds"}


def values(row) -> dict:
    fields = {
        field.name: field.value_from_object(row) for field in row._meta.concrete_fields if field.name not in VOLATILE
    }
    if isinstance(row, Event):
        fields["payload"] = {key: value for key, value in row.payload.items() if key not in VOLATILE_PAYLOAD}
    return fields


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
        ledger_inserts = [q for q in queries.captured_queries if 'INSERT INTO "workflows_ledgerentry"' in q["sql"]]
        settled_in_one_call = not ledger_inserts
        one_call.append(f"{step.agent}: admit={attempt.basis is not None} settle={settled_in_one_call}")
    return one_call


TOPIC = {"topic": "x"}
ALL_IN_ONE_CALL = [
    "researcher: admit=True settle=True",
    "writer: admit=True settle=True",
    "reviewer: admit=True settle=True",
]


def scenario(
    settings, *, step_functions_on: bool, source: str, inputs: dict, limits: dict, team_changes: dict, runs: int
):
    """`runs` runs of `source` in a team of their own, one after the other; their rows and one-call marks."""
    settings.STEP_FUNCTIONS = step_functions_on
    team = TeamFactory()
    if team_changes:
        team = team_budgets_update(team=team, changes=team_changes, actor="tests")
    version = workflow_version(team=team, source=source)
    rows, one_call = [], []
    for _ in range(runs):
        run = run_start(team=team, workflow=version.workflow_id, inputs=inputs, limits=limits)
        one_call.append(execute_run(run))
        assert_invariants(run)
        rows.append(snapshot(run))
    return rows, one_call


def both_ways(settings, **scenario_args):
    general, general_calls = scenario(settings, step_functions_on=False, **scenario_args)
    one_call, calls = scenario(settings, step_functions_on=True, **scenario_args)
    assert all("True" not in line for run in general_calls for line in run)
    assert one_call == general
    return calls


def test_plain_steps_with_room_take_one_call_each_way_and_write_what_the_general_paths_write(settings):
    calls = both_ways(
        settings,
        source=THREE_STEP_YAML,
        inputs=TOPIC,
        limits={"budget_usd": "5", "budget_mode": "enforce"},
        team_changes={"period_budget_usd": "100", "period_mode": "enforce"},
        runs=1,
    )
    assert calls == [ALL_IN_ONE_CALL]


@pytest.mark.parametrize(
    "source,inputs,limits,team_changes,runs,expected_one_call",
    [
        pytest.param(
            # $0.60 of $0.80 crosses the 50% alert after the writer, and the reviewer's $0.90 goes over
            # the audited budget: the general paths record the crossing and report.
            THREE_STEP_YAML, TOPIC, {"budget_usd": "0.8", "budget_mode": "audit"}, {}, 1,
            [[
                "researcher: admit=True settle=True",
                "writer: admit=True settle=False",
                "reviewer: admit=False settle=False",
            ]],
            id="alert-and-audit-report",
        ),
        pytest.param(
            # The team's $0.50 a day has no room for the writer: the general path stops the run.
            THREE_STEP_YAML, TOPIC, {}, {"period_budget_usd": "0.5", "period": "day", "period_mode": "enforce"}, 1,
            [["researcher: admit=True settle=False", "writer: admit=False settle=False"]],
            id="team-budget-stop",
        ),
        pytest.param(
            LOOP_YAML, {}, {"max_iterations": 3}, {}, 1,
            [["thinker: admit=True settle=True"] * 3 + ["thinker: admit=False settle=False"]],
            id="iteration-limit",
        ),
        pytest.param(
            # Over the audited budget from the third step on: reported once, then re-armed past $0.05.
            LOOP_YAML, {}, {"max_iterations": 6, "budget_usd": "0.025", "budget_mode": "audit"},
            {"alert_thresholds": [1000]}, 1, None, id="audit-report-and-rearm",
        ),
        pytest.param(
            LOOP_YAML, {}, {"max_iterations": 4, "budget_usd": "0.04", "budget_mode": "enforce"}, {}, 1, None,
            id="run-budget-stop",
        ),
        pytest.param(
            THREE_STEP_YAML, TOPIC, {}, {"period_budget_usd": "0.7", "period": "week", "period_mode": "audit",
                                         "alert_thresholds": [99]}, 2, None, id="team-week-audit-two-runs",
        ),
        pytest.param(
            THREE_STEP_YAML, TOPIC, {}, {"period_budget_usd": "1.2", "period": "month", "period_mode": "enforce"}, 2,
            None, id="team-month-enforce-two-runs",
        ),
        pytest.param(
            THREE_STEP_YAML, TOPIC, {"budget_usd": "0.6", "budget_mode": "enforce"}, {"alert_thresholds": [50, 100]},
            1, None, id="thresholds-reached-exactly",
        ),
        pytest.param(
            THREE_STEP_YAML, TOPIC, {"budget_usd": "0.9", "budget_mode": "enforce"}, {"alert_thresholds": []}, 1,
            [ALL_IN_ONE_CALL],
            id="no-thresholds",
        ),
        pytest.param(
            UNPRICED_YAML, {}, {}, {}, 1,
            [["drafter: admit=False settle=False", "checker: admit=False settle=False"]],
            id="unpriced-model",
        ),
        pytest.param(FAN_OUT_YAML, {"subject": "s"}, {}, {}, 1, None, id="groups"),
    ],
)
def test_the_one_call_paths_decline_to_the_general_paths_and_write_the_same_rows(
    settings, source, inputs, limits, team_changes, runs, expected_one_call
):
    calls = both_ways(settings, source=source, inputs=inputs, limits=limits, team_changes=team_changes, runs=runs)
    if expected_one_call is not None:
        assert calls == expected_one_call


def control_flow(settings, *, step_functions_on: bool, flow: str) -> dict:
    """A run through a cancel, a provider retry or a stop and resume; its rows."""
    settings.STEP_FUNCTIONS = step_functions_on
    team = TeamFactory()
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    limits = {"budget_usd": "0.6", "budget_mode": "enforce"} if flow == "resume" else {}
    run = run_start(team=team, workflow=version.workflow_id, inputs=TOPIC, limits=limits)
    if flow == "cancel":
        attempt = step_begin(step_id=run.steps.get().pk, worker="host:1")
        run_cancel(run=run)
        step_settle(attempt=attempt, result=get_provider("fake").complete(attempt.prepared.request))
    elif flow == "retry":
        attempt = step_begin(step_id=run.steps.get().pk, worker="host:1")
        usage = Usage(input_tokens=10, output_tokens=20)
        failure = ProviderError("overloaded", retryable=True, status_code=503, usage=usage)
        step_provider_failed(attempt=attempt, error=failure)
        execute_run(run)
    else:
        execute_run(run)
        run_resume(run=Run.objects.get(pk=run.pk), limits={"budget_usd": "2"}, reason="more budget")
        execute_run(run)
    assert_invariants(run)
    return snapshot(run)


@pytest.mark.parametrize("flow", ["cancel", "retry", "resume"])
def test_control_requests_between_the_calls_leave_the_same_rows(settings, flow):
    assert control_flow(settings, step_functions_on=True, flow=flow) == control_flow(
        settings, step_functions_on=False, flow=flow
    )


class Rollback(Exception):
    pass


def test_admit_takes_one_call_exactly_when_the_gate_admits_without_going_over_any_budget(team):
    """Over every combination of limits that decide a gate, both ways round: the function admits
    when `gate_decide` would admit with every budget under its projection, and declines otherwise."""
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs=TOPIC, limits={"max_iterations": 3})
    step = run.steps.get()
    basis = step_functions.step_basis(step.pk)
    estimate = Decimal("0.3")
    compared = 0
    for run_budget, run_mode, team_budget, team_mode, iterations, active_seconds, timeout in itertools.product(
        [None, "0.5", "0.499999"], ["audit", "enforce"], [None, "0.4", "0.399999"], ["audit", "enforce"],
        [2, 3], [5, 20], [None, 10],
    ):  # fmt: skip
        now = timezone.now()
        Run.objects.filter(pk=run.pk).update(
            budget_usd=run_budget, budget_mode=run_mode, spent_usd="0.1", reserved_usd="0.1", iterations=iterations,
            timeout_seconds=timeout, active_time=timedelta(0), active_since=now - timedelta(seconds=active_seconds),
        )  # fmt: skip
        Team.objects.filter(pk=team.pk).update(period_budget_usd=team_budget, period_mode=team_mode, reserved_usd="0.1")
        decision = gate_decide(
            gate_input(run=Run.objects.get(pk=run.pk), team=Team.objects.get(pk=team.pk), estimate=estimate, now=now)
        )
        try:
            with transaction.atomic():
                admitted = step_functions.admit(basis=basis, estimate=estimate, model="m", worker="w", at=now)
                raise Rollback
        except Rollback:
            pass
        expected = decision.admitted and not decision.over_budget
        assert (admitted is not None) == expected, (run_budget, run_mode, team_budget, team_mode, iterations, timeout)
        compared += 1
    assert compared == 3 * 2 * 3 * 2 * 2 * 2 * 2


def test_admit_declines_a_step_its_run_has_no_room_for_and_writes_nothing(team):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs=TOPIC, limits={"budget_usd": "0.5"})
    step = run.steps.get()
    basis = step_functions.step_basis(step.pk)
    before = snapshot(run)

    def admit(estimate: str) -> int | None:
        return step_functions.admit(basis=basis, estimate=Decimal(estimate), model="m", worker="w", at=timezone.now())

    assert admit("0.500001") is None
    assert snapshot(run) == before
    assert admit("0.5") == 1
    step.refresh_from_db()
    assert (step.status, step.reserved_usd, step.model, step.worker) == ("running", Decimal("0.5"), "m", "w")


def test_settle_declines_an_attempt_that_no_longer_owns_its_step(team):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs=TOPIC, limits={})
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


def hold_team_lock(team_id: int, seconds: float, held: threading.Event) -> None:
    try:
        with transaction.atomic():
            Team.objects.select_for_update(no_key=True).get(pk=team_id)
            held.set()
            time.sleep(seconds)
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_the_timeout_is_judged_when_the_locks_are_held_not_when_the_call_was_made(team):
    """A gate that waits for its team's lock judges the timeout at the end of the wait, as the general path does."""
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs=TOPIC, limits={"timeout_seconds": 2})
    Run.objects.filter(pk=run.pk).update(active_since=timezone.now() - timedelta(seconds=1.5))
    held = threading.Event()
    holder = threading.Thread(target=hold_team_lock, args=(team.pk, 1.5, held))
    holder.start()
    held.wait()
    attempt = step_begin(step_id=run.steps.get().pk, worker="host:1")  # waits about 1.5 s for the team
    holder.join()

    run.refresh_from_db()
    assert attempt is None
    assert run.status == "timed_out"


@pytest.mark.django_db(transaction=True)
def test_a_failing_function_sends_the_step_the_general_way(team, caplog):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs=TOPIC, limits={})
    attempt = step_begin(step_id=run.steps.get().pk, worker="host:1")
    result = get_provider("fake").complete(attempt.prepared.request)
    arguments = "(bigint, integer, bigint, timestamptz, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb)"
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER FUNCTION workflows_step_settle{arguments} RENAME TO workflows_step_settle_hidden")
    try:
        with caplog.at_level(logging.ERROR, logger="workflows.services.step_functions"):
            step_settle(attempt=attempt, result=result)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER FUNCTION workflows_step_settle_hidden{arguments} RENAME TO workflows_step_settle")

    assert "The step settle function failed" in caplog.text
    run.refresh_from_db()
    assert (run.iterations, list(run.ledger_entries.values_list("attempt", flat=True))) == (1, [1])
    assert list(run.steps.values_list("agent", "status")) == [("researcher", "succeeded"), ("writer", "pending")]
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
