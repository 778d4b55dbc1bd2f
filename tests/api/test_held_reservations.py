"""A running attempt's reservation is visible in the run, its steps, the team and the run's admin
page; once its worker is found dead, the attempt is charged it as an estimate, and the ledger and
the views show that."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.factories import THREE_STEP_YAML, workflow_version
from tests.invariants import assert_invariants
from workflows.services.runs import run_cancel, run_start
from workflows.services.steps import step_begin
from workflows.services.sweeper import SweepReport, sweep_stuck_steps

pytestmark = pytest.mark.django_db


@pytest.fixture
def crashed_run(team):
    """A run whose first step's attempts died mid-call twice: admitted, then run again by a redelivery,
    never settled. The first is charged as an estimate; the second holds its reservation."""
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits={"budget_usd": "5"})
    step = run.steps.get(sequence=1)
    step_begin(step_id=step.pk, worker="host-a:101")  # then host-a dies
    step_begin(step_id=step.pk, worker="host-b:202")  # a redelivery takes the attempt over; it dies too
    return run


def test_a_crashed_attempts_reservation_shows_in_the_run_its_steps_and_the_team(api, crashed_run):
    run = api.get(f"/api/v1/runs/{crashed_run.pk}").json()
    # The first attempt, taken over, is charged its reservation as an estimate; the second holds its own.
    assert (run["status"], run["spent_usd"], run["estimated_usd"], run["reserved_usd"]) == (
        "running",
        "0.300000",
        "0.300000",
        "0.300000",
    )

    (step,) = api.get(f"/api/v1/runs/{crashed_run.pk}/steps").json()["results"]
    assert (step["status"], step["attempts"], step["redeliveries"]) == ("running", 2, 1)
    assert (step["estimate_usd"], step["reserved_usd"]) == ("0.300000", "0.300000")

    assert api.get("/api/v1/team").json()["period_budget"]["reserved_usd"] == "0.300000"
    # The attempt in flight is held, not spent: only the one taken over is in the ledger.
    ledger = api.get(f"/api/v1/runs/{crashed_run.pk}/ledger").json()["results"]
    assert [(e["attempt"], e["basis"], e["cost_usd"], e["reason"]) for e in ledger] == [
        (1, "estimated", "0.300000", "Attempt 1 lost its worker before it settled.")
    ]
    assert_invariants(crashed_run)


def test_a_crashed_attempts_reservation_shows_on_the_runs_admin_page(admin_client, crashed_run):
    page = admin_client.get(reverse("admin:workflows_run_change", args=[crashed_run.pk])).content.decode()

    assert "<tr><th>Reserved</th><td>$0.30</td></tr>" in page
    cells = re.sub(r">\s+<", "><", page)
    assert '<small class="redeliveries">(1 redelivered)</small>' in cells
    assert '<small class="held">$0.300000 held</small>' in cells
    assert '<small title="the worker of its latest attempt">on host-b:202</small>' in cells


def test_a_crashed_attempt_in_a_stopped_run_is_charged_its_reservation_and_the_views_show_it(
    api, team, crashed_run
):
    run_cancel(run=crashed_run)
    assert api.get(f"/api/v1/runs/{crashed_run.pk}").json()["reserved_usd"] == "0.300000"  # still held

    # Past the grace on PostgreSQL, past the lease on SQLite; no live process holds the attempt lock.
    step_id = crashed_run.steps.get().pk
    assert sweep_stuck_steps(now=timezone.now() + timedelta(hours=1)) == SweepReport(crashed_resent=1, lost_resent=0)
    assert step_begin(step_id=step_id, worker="host-c:303") is None  # the sweeper's delivery

    run = api.get(f"/api/v1/runs/{crashed_run.pk}").json()
    assert (run["status"], run["spent_usd"], run["reserved_usd"]) == ("cancelled", "0.600000", "0.000000")
    (step,) = api.get(f"/api/v1/runs/{crashed_run.pk}/steps").json()["results"]
    assert (step["status"], step["reserved_usd"], step["error"]["type"]) == ("cancelled", "0.000000", "StepCrashedError")
    assert api.get("/api/v1/team").json()["period_budget"]["reserved_usd"] == "0.000000"
    assert_invariants(crashed_run)
