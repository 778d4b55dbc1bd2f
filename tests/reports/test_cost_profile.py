"""cost_profile: nearest-rank percentiles of completed runs, the budget rule, agents' step costs and
the audit runs an enforce budget would have stopped."""

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.factories import TeamFactory, workflow_version
from tests.providers.conftest import drive
from tests.reports.ledger import answer, charge, start_run, taken_over
from workflows.models import BudgetScope, EventType, Run, RunStatus
from workflows.reports.cost_profile import MARGIN, cost_profile, nearest_rank
from workflows.services.events import event_record
from workflows.services.steps import step_settle

pytestmark = pytest.mark.django_db

AT = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def version(team):
    return workflow_version(team=team)


def finished(run: Run, *, spent_usd: str, status: str = RunStatus.COMPLETED) -> Run:
    Run.objects.filter(pk=run.pk).update(spent_usd=Decimal(spent_usd), status=status)
    return run


def record_budget_exceeded(run: Run, *, agent: str, spent: str, projected: str, budget: str, mode="audit", **extra):
    payload = {"budget_usd": budget, "spent_usd": spent, "projected_usd": projected, "budget_mode": mode}
    event_record(run=run, type=EventType.BUDGET_EXCEEDED, payload={**payload, "current_agent": agent, **extra})


@pytest.mark.parametrize(
    "values,percent,expected",
    [
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50, 5),  # rank ceil(5.0) = 5
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95, 10),  # rank ceil(9.5) = 10
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], 95, 19),  # rank 19
        ([1, 2, 3], 50, 2),  # rank ceil(1.5) = 2
        ([7], 95, 7),
    ],
)
def test_nearest_rank_picks_an_observed_value_at_rank_ceil_p_times_n(values, percent, expected):
    assert nearest_rank([Decimal(v) for v in values], percent=percent) == Decimal(expected)


def test_the_recommended_budget_is_p95_of_completed_runs_times_the_margin_rounded_up_to_the_cent(team, version):
    # 20 completed runs cost 0.0401, 0.0801, ..., 0.8001, created shuffled: only the database's sort orders them.
    spends = [Decimal("0.04") * k + Decimal("0.0001") for k in range(1, 21)]
    for spent in random.Random(7).sample(spends, len(spends)):
        finished(start_run(team=team, version=version), spent_usd=str(spent))
    finished(start_run(team=team, version=version), spent_usd="9.0", status=RunStatus.FAILED)
    start_run(team=team, version=version)  # still queued
    other_version = workflow_version(team=team, source=version.source, name="another")
    finished(start_run(team=team, version=other_version), spent_usd="50.0")

    profile = cost_profile(workflow=version.workflow)

    assert (profile.runs, profile.completed_runs) == (22, 20)
    assert profile.p50 == Decimal("0.400100")  # rank ceil(0.50 x 20) = 10
    assert profile.p95 == Decimal("0.760100")  # rank ceil(0.95 x 20) = 19
    assert profile.max == Decimal("0.800100")
    # 0.7601 x 1.25 = 0.950125: up to 0.96, where rounding to nearest would give 0.95.
    assert (profile.margin, profile.recommended_budget_usd) == (MARGIN, Decimal("0.96"))
    assert profile.rule == "p95 of completed runs x 1.25, rounded up to the cent"
    assert profile.note is None


def test_runs_of_every_version_count(team, version):
    newer = workflow_version(team=team)
    assert newer.workflow_id == version.workflow_id and newer.version == 2
    finished(start_run(team=team, version=version), spent_usd="0.10")
    finished(start_run(team=team, version=newer), spent_usd="0.20")

    profile = cost_profile(workflow=version.workflow)

    assert (profile.completed_runs, profile.max) == (2, Decimal("0.20"))


def test_without_completed_runs_there_are_no_percentiles_and_the_note_says_why(team, version):
    finished(start_run(team=team, version=version), spent_usd="0.30", status=RunStatus.BUDGET_EXCEEDED)

    profile = cost_profile(workflow=version.workflow)

    assert (profile.runs, profile.completed_runs) == (1, 0)
    assert (profile.p50, profile.p95, profile.max, profile.recommended_budget_usd) == (None, None, None, None)
    assert profile.note == "No completed runs yet: the percentiles and the recommended budget need at least one."


def test_completed_runs_with_unpriced_steps_are_flagged_as_understated(team, version):
    run = finished(start_run(team=team, version=version), spent_usd="0.30")
    Run.objects.filter(pk=run.pk).update(unpriced_steps=2)
    finished(start_run(team=team, version=version), spent_usd="0.60")

    profile = cost_profile(workflow=version.workflow)

    assert profile.recommended_budget_usd == Decimal("0.75")
    assert profile.note.startswith("1 of 2 completed runs had unpriced steps")


def test_a_free_p95_recommends_no_budget_since_a_budget_must_be_positive(team, version):
    finished(start_run(team=team, version=version), spent_usd="0")

    profile = cost_profile(workflow=version.workflow)

    assert (profile.p95, profile.recommended_budget_usd) == (Decimal("0"), None)
    assert "no positive budget" in profile.note


def completed_after_a_takeover(team, version, *, late_output_tokens: int | None = None) -> Run:
    """A run whose researcher's first attempt was taken over, charged its $0.30 reservation as an
    estimate, and settled late with `late_output_tokens` (a correction) or never; then run to its end."""
    run = start_run(team=team, version=version)
    late, owner = taken_over(run, sequence=1)
    step_settle(attempt=owner, result=answer({"findings": "f"}))
    if late_output_tokens is not None:
        step_settle(attempt=late, result=answer({"findings": "late"}, output_tokens=late_output_tokens))
    return drive(run)


def test_estimates_awaiting_usage_do_not_inflate_the_recommendation(team, version):
    drive(start_run(team=team, version=version))  # three steps at $0.30
    crashed = completed_after_a_takeover(team, version)
    assert (crashed.status, crashed.spent_usd) == (RunStatus.COMPLETED, Decimal("1.200000"))

    profile = cost_profile(workflow=version.workflow)

    # The run counts at its settled $0.90: with the $0.30 estimate, p95 would be $1.20 and recommend $1.50.
    assert (profile.completed_runs, profile.p95, profile.max) == (2, Decimal("0.900000"), Decimal("0.900000"))
    assert profile.recommended_budget_usd == Decimal("1.13")
    assert profile.mean_cost_by_agent == {agent: Decimal("0.300000") for agent in ("researcher", "reviewer", "writer")}
    assert profile.note == (
        "1 of 2 completed runs had attempts whose usage has not arrived: their estimated cost is left out, "
        "so the percentiles and the recommendation understate them."
    )


def test_an_estimate_its_late_usage_corrected_counts_as_what_the_attempt_cost(team, version):
    completed_after_a_takeover(team, version, late_output_tokens=500)

    profile = cost_profile(workflow=version.workflow)

    # Both attempts were billed: $0.15 for the late one, $0.30 for the one that took over.
    assert (profile.p95, profile.recommended_budget_usd, profile.note) == (Decimal("1.050000"), Decimal("1.32"), None)
    assert profile.mean_cost_by_agent["researcher"] == Decimal("0.450000")


def test_mean_cost_by_agent_is_per_priced_step_with_attempts_summed(team, version):
    run = start_run(team=team, version=version)
    charge(run=run, agent="researcher", cost_usd="0.100000", at=AT)
    charge(run=run, agent="researcher", cost_usd="0.300000", at=AT)
    retried = charge(run=run, agent="writer", cost_usd="0.100000", at=AT)
    charge(run=run, agent="writer", cost_usd="0.200000", at=AT, step=retried.step, attempt=2)
    charge(run=run, agent="writer", cost_usd=None, at=AT)
    charge(run=run, agent="reviewer", model="mystery-model", cost_usd=None, at=AT)

    profile = cost_profile(workflow=version.workflow)

    assert profile.mean_cost_by_agent == {
        "researcher": Decimal("0.200000"),
        "reviewer": None,  # no priced step: unknown, not $0
        "writer": Decimal("0.300000"),
    }


def test_would_have_stopped_lists_each_audit_runs_first_report_of_its_own_budget(team, version):
    audited = start_run(team=team, version=version, limits={"budget_usd": "0.5", "budget_mode": "audit"})
    record_budget_exceeded(audited, agent="writer", spent="0.3", projected="0.6", budget="0.5", scope=BudgetScope.RUN)
    record_budget_exceeded(audited, agent="reviewer", spent="0.9", projected="1.2", budget="0.5", scope=BudgetScope.RUN)
    # Recorded before budget_exceeded payloads named their scope.
    unscoped = start_run(team=team, version=version, limits={"budget_usd": "0.25", "budget_mode": "audit"})
    record_budget_exceeded(unscoped, agent="researcher", spent="0", projected="0.3", budget="0.25")
    enforced = start_run(team=team, version=version, limits={"budget_usd": "0.5", "budget_mode": "enforce"})
    record_budget_exceeded(enforced, agent="writer", spent="0.3", projected="0.6", budget="0.5", mode="enforce")
    team_budget_only = start_run(team=team, version=version)
    record_budget_exceeded(team_budget_only, agent="writer", spent="9", projected="10.3", budget="10", scope=BudgetScope.TEAM)

    profile = cost_profile(workflow=version.workflow)

    assert [(s.run, s.step_agent, s.spent_usd, s.projected_usd, s.budget_usd) for s in profile.would_have_stopped] == [
        (audited.pk, "writer", Decimal("0.3"), Decimal("0.6"), Decimal("0.5")),
        (unscoped.pk, "researcher", Decimal("0"), Decimal("0.3"), Decimal("0.25")),
    ]


def test_another_workflows_runs_and_ledger_stay_out(team, version):
    other = TeamFactory(name="globex")
    theirs = start_run(team=other, version=workflow_version(team=other))
    finished(theirs, spent_usd="4.00")
    charge(run=theirs, cost_usd="4.000000", at=AT)

    profile = cost_profile(workflow=version.workflow)

    assert (profile.runs, profile.mean_cost_by_agent, profile.would_have_stopped) == (0, {}, [])
