"""The gate under concurrency: 200 steps at once, on several worker processes, against one team's $1.00
period budget. With estimates that hold, spend never passes the budget, the fake's mock input counts
included. A naive check-then-act gate, kept here as the control, overshoots under the same load."""

import queue
import threading
import time
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import Sum
from django.utils import timezone

from tests.conftest import wait_until
from tests.factories import workflow_version
from tests.integration.conftest import WORKER_CONCURRENCY, WORKER_PROCESSES
from tests.invariants import assert_invariants
from workflows.models import LedgerEntry, Run, RunStatus, Step, StepStatus
from workflows.selectors import team_budget_status
from workflows.services.budgets import add, gate_input
from workflows.services.gate import gate_decide
from workflows.services.runs import run_start
from workflows.services.teams import team_budgets_update

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis://"),
        reason="needs DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://...: the race is between "
        "worker processes on one PostgreSQL database, which SQLite and the filesystem broker cannot host",
    ),
]

RUNS = 200
TEAM_BUDGET = Decimal("1.00")
# A step occupies a worker slot from its gate to its settlement, so no more can be in flight at once.
MAX_IN_FLIGHT = WORKER_PROCESSES * WORKER_CONCURRENCY
TERMINAL = (RunStatus.COMPLETED, RunStatus.BUDGET_EXCEEDED, RunStatus.FAILED)

# One step: 1,000 output tokens at $10/Mtok, exactly the max_tokens the estimate assumes, and free input:
# estimate and cost are both $0.01. The latency keeps all worker slots busy while the runs are started.
ONE_CENT_YAML = """
workflow:
  name: one-cent
  entry_point: only
  runtime: {provider: fake, default_model: sim-model, max_tokens: 1000}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 10}
agents:
  - name: only
    prompt: "Go"
    mock: {output_tokens: 1000, latency_ms: 200}
"""

# The same step with input priced at $10/Mtok: the local count of "Go" is 1 token, but the fake reports
# its mock's 500, and its estimate counts them too: each step costs its estimate, $0.015000.
MOCK_INPUT_YAML = ONE_CENT_YAML.replace("input_per_mtok: 0", "input_per_mtok: 10").replace(
    "latency_ms: 200", "latency_ms: 200, input_tokens: 500"
)


@pytest.fixture
def team_with_budget(team):
    team_budgets_update(
        team=team, changes={"period_budget_usd": str(TEAM_BUDGET), "period_mode": "enforce"}, actor="user:test"
    )
    team.refresh_from_db()
    return team


def run_all(team, source: str) -> list[Run]:
    """Start RUNS runs of the workflow, one after another as fast as possible; the runs once all have stopped."""
    workflow = workflow_version(team=team, source=source).workflow_id
    started = [run_start(team=team, workflow=workflow).pk for _ in range(RUNS)]
    wait_until(
        lambda: Run.objects.filter(pk__in=started, status__in=TERMINAL).count() == RUNS,
        timeout=90,
        message=f"all {RUNS} runs to stop",
    )
    return list(Run.objects.filter(pk__in=started))


def ledger_total(team) -> Decimal:
    return LedgerEntry.objects.filter(team=team).aggregate(total=Sum("cost_usd"))["total"] or Decimal("0")


def peak_in_flight(team) -> int:
    """The most steps that were between their gate and their settlement at the same moment."""
    moments = Step.objects.filter(run__team=team, status=StepStatus.SUCCEEDED).values_list("started_at", "finished_at")
    changes = sorted([(started, 1) for started, _ in moments] + [(finished, -1) for _, finished in moments])
    peak = in_flight = 0
    for _, change in changes:
        in_flight += change
        peak = max(peak, in_flight)
    return peak


def assert_stopped_by_the_team_budget_only(runs: list[Run]) -> None:
    statuses = {run.status for run in runs}
    assert statuses <= {RunStatus.COMPLETED, RunStatus.BUDGET_EXCEEDED}, statuses
    assert {run.error["scope"] for run in runs if run.status == RunStatus.BUDGET_EXCEEDED} == {"team"}


def test_concurrent_steps_on_several_workers_never_spend_past_the_team_budget(team_with_budget, workers):
    runs = run_all(team_with_budget, ONE_CENT_YAML)

    assert_invariants(*runs)
    assert_stopped_by_the_team_budget_only(runs)
    assert ledger_total(team_with_budget) <= TEAM_BUDGET
    # Every cent of the budget is used, none twice: exactly $1.00 / $0.01 steps are admitted.
    assert sum(run.status == RunStatus.COMPLETED for run in runs) == 100
    assert ledger_total(team_with_budget) == TEAM_BUDGET
    team_with_budget.refresh_from_db()
    assert team_budget_status(team=team_with_budget).reserved_usd == 0
    # The steps did race: more were in flight at once than one worker process can run.
    assert peak_in_flight(team_with_budget) > WORKER_CONCURRENCY


def test_a_fakes_mock_input_is_estimated_so_its_steps_never_spend_past_the_team_budget(team_with_budget, workers):
    runs = run_all(team_with_budget, MOCK_INPUT_YAML)

    assert_invariants(*runs)
    assert_stopped_by_the_team_budget_only(runs)
    entries = LedgerEntry.objects.filter(team=team_with_budget).select_related("step")
    assert {entry.cost_usd - entry.step.estimate_usd for entry in entries} == {Decimal("0")}
    # 66 steps of $0.015 fit in $1.00; the 67th would pass it.
    assert ledger_total(team_with_budget) == Decimal("0.990000")
    assert sum(run.status == RunStatus.COMPLETED for run in runs) == 66
    team_with_budget.refresh_from_db()
    assert team_budget_status(team=team_with_budget).reserved_usd == 0
    assert peak_in_flight(team_with_budget) > WORKER_CONCURRENCY


# --- the control: the same decision, made without holding the team lock until the charge -----------

STEP_USD = Decimal("0.010000")
# Time between the check and the charge, as a provider call or a busy worker puts there.
CHECK_TO_CHARGE_SECONDS = 0.02


def naive_step(step_id: int) -> None:
    """Check the budget in one transaction and charge in another, as gateways that race past budgets do."""
    with transaction.atomic():
        step = Step.objects.select_related("run__team").get(pk=step_id)
        run, team = step.run, step.run.team
        admitted = gate_decide(gate_input(run=run, team=team, estimate=STEP_USD)).admitted
    if not admitted:
        return
    time.sleep(CHECK_TO_CHARGE_SECONDS)
    with transaction.atomic():
        LedgerEntry.objects.create(
            team=team, run=run, step=step, attempt=1, agent=step.agent, provider="fake", model="sim-model",
            input_tokens=0, output_tokens=1000, cost_usd=STEP_USD,
        )  # fmt: skip
        add(run, spent_usd=STEP_USD)


def test_control_a_check_then_act_gate_spends_past_the_budget_under_the_same_load(team_with_budget):
    version = workflow_version(team=team_with_budget, source=ONE_CENT_YAML)
    pending: queue.SimpleQueue[int] = queue.SimpleQueue()
    for _ in range(RUNS):
        run = Run.objects.create(
            team=team_with_budget, workflow_version=version, status=RunStatus.RUNNING, active_since=timezone.now()
        )
        pending.put(Step.objects.create(run=run, sequence=1, agent="only", iteration=1).pk)

    def worker_slot() -> None:
        try:
            while True:
                try:
                    naive_step(pending.get_nowait())
                except queue.Empty:
                    return
        finally:
            connections.close_all()  # this thread's connection, or the test database cannot be flushed

    slots = [threading.Thread(target=worker_slot) for _ in range(MAX_IN_FLIGHT)]
    for slot in slots:
        slot.start()
    for slot in slots:
        slot.join()

    spent = ledger_total(team_with_budget)
    assert spent > TEAM_BUDGET, f"the naive gate kept to the budget this time (spent ${spent}): raise the load"
