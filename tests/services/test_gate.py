from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from workflows.services.gate import BudgetState, GateInput, gate_decide

D = Decimal

RUN = BudgetState(
    scope="run", subject="the run", budget_usd=D("0.50"), mode="enforce", spent_usd=D("0.30"), reserved_usd=D("0")
)
NO_TEAM_BUDGET = BudgetState(
    scope="team", subject="team 'acme' this month", budget_usd=None, mode="audit", spent_usd=D("0"), reserved_usd=D("0")
)
BASE = GateInput(
    max_iterations=10,
    timeout_seconds=None,
    iterations=1,
    elapsed=timedelta(seconds=5),
    estimate_usd=D("0.20"),
    budgets=(RUN, NO_TEAM_BUDGET),
)


def with_budgets(state: GateInput = BASE, *, run: dict | None = None, team: dict | None = None, **fields) -> GateInput:
    return replace(state, budgets=(replace(RUN, **(run or {})), replace(NO_TEAM_BUDGET, **(team or {}))), **fields)


def test_a_projection_equal_to_the_budget_is_admitted():
    decision = gate_decide(BASE)
    assert decision.admitted and decision.over_budget == ()


def test_enforce_stops_one_micro_dollar_over():
    decision = gate_decide(replace(BASE, estimate_usd=D("0.200001")))
    assert decision.stop == "budget_exceeded"
    assert (decision.stopped_by.scope, decision.stopped_by.projected_usd) == ("run", D("0.500001"))
    assert decision.message == "The next step would bring the run to $0.500001, over its budget of $0.50."


def test_reservations_in_flight_count_toward_the_projection():
    assert gate_decide(with_budgets(run={"reserved_usd": D("0.000001")})).stop == "budget_exceeded"


def test_timeout_is_checked_first_then_iterations_then_budget():
    everything_over = replace(BASE, timeout_seconds=4, iterations=10, estimate_usd=D("9"), elapsed=timedelta(seconds=4.5))
    assert gate_decide(everything_over).stop == "timed_out"
    assert gate_decide(replace(everything_over, timeout_seconds=None)).stop == "iteration_limit"
    assert gate_decide(replace(everything_over, timeout_seconds=None, iterations=9)).stop == "budget_exceeded"


def test_iteration_limit_stops_when_executed_reaches_max():
    assert gate_decide(replace(BASE, iterations=9, max_iterations=10)).admitted
    assert gate_decide(replace(BASE, iterations=10, max_iterations=10)).stop == "iteration_limit"


@pytest.mark.parametrize("run_budget,estimate_usd", [(None, D("5")), (D("0.5"), None)])
def test_no_budget_or_no_price_projects_nothing(run_budget, estimate_usd):
    decision = gate_decide(with_budgets(run={"budget_usd": run_budget}, estimate_usd=estimate_usd))
    assert decision.admitted and decision.over_budget == ()


def test_a_team_period_budget_stops_a_run_that_has_room_left():
    state = with_budgets(
        run={"budget_usd": None},
        team={"budget_usd": D("1.00"), "mode": "enforce", "spent_usd": D("0.70"), "reserved_usd": D("0.20")},
    )
    decision = gate_decide(state)
    assert decision.stop == "budget_exceeded"
    assert (decision.stopped_by.scope, decision.stopped_by.projected_usd) == ("team", D("1.10"))
    assert "team 'acme' this month" in decision.message


def test_a_step_runs_only_if_both_budgets_admit_it_and_the_run_is_named_first():
    both_over = with_budgets(run={"budget_usd": D("0.40")}, team={"budget_usd": D("0.10"), "mode": "enforce"})
    assert gate_decide(both_over).stopped_by.scope == "run"
    team_audit = with_budgets(run={"budget_usd": D("0.40")}, team={"budget_usd": D("0.10"), "mode": "audit"})
    assert gate_decide(team_audit).stopped_by.scope == "run"


def test_audit_at_either_scope_reports_and_admits():
    state = with_budgets(
        run={"mode": "audit", "budget_usd": D("0.40")}, team={"budget_usd": D("0.10"), "spent_usd": D("0.05")}
    )
    decision = gate_decide(state)
    assert decision.admitted
    assert [(check.scope, check.projected_usd) for check in decision.reports] == [("run", D("0.50")), ("team", D("0.25"))]


def test_audit_reports_once_then_again_each_time_the_projection_grows_by_a_full_budget():
    audit = with_budgets(run={"mode": "audit"}, estimate_usd=D("0.30"))
    [first] = gate_decide(audit).reports
    assert first.audit_rearm_at_usd == D("1.10")  # projected 0.60 + budget 0.50

    def reports_at(spent: str):
        return gate_decide(with_budgets(audit, run={"mode": "audit", "spent_usd": D(spent), "audit_rearm_at_usd": D("1.10")})).reports

    assert reports_at("0.60") == ()  # projected 0.90
    assert reports_at("0.80") == ()  # projected 1.10: not past it
    [second] = reports_at("0.90")  # projected 1.20
    assert second.audit_rearm_at_usd == D("1.70")


def test_audit_does_not_report_under_a_raised_budget_even_past_the_old_rearm_point():
    raised = with_budgets(run={"mode": "audit", "budget_usd": D("5"), "spent_usd": D("1.2"), "audit_rearm_at_usd": D("1.0")})
    assert gate_decide(raised).reports == ()
