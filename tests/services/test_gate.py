from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from workflows.services.gate import GateInput, gate_decide

D = Decimal

BASE = GateInput(
    budget_usd=D("0.50"),
    budget_mode="enforce",
    max_iterations=10,
    timeout_seconds=None,
    spent_usd=D("0.30"),
    reserved_usd=D("0"),
    iterations=1,
    elapsed=timedelta(seconds=5),
    audit_rearm_at_usd=None,
    estimate_usd=D("0.20"),
)


def test_a_projection_equal_to_the_budget_is_admitted():
    decision = gate_decide(BASE)
    assert decision.admitted
    assert decision.projected_usd == D("0.50")


def test_enforce_stops_one_micro_dollar_over():
    decision = gate_decide(replace(BASE, estimate_usd=D("0.200001")))
    assert decision.stop == "budget_exceeded"
    assert decision.projected_usd == D("0.500001")


def test_reservations_in_flight_count_toward_the_projection():
    assert gate_decide(replace(BASE, reserved_usd=D("0.000001"))).stop == "budget_exceeded"


def test_timeout_is_checked_first_then_iterations_then_budget():
    everything_over = replace(
        BASE, timeout_seconds=4, iterations=10, estimate_usd=D("9"), elapsed=timedelta(seconds=4.5)
    )
    assert gate_decide(everything_over).stop == "timed_out"
    assert gate_decide(replace(everything_over, timeout_seconds=None)).stop == "iteration_limit"
    assert gate_decide(replace(everything_over, timeout_seconds=None, iterations=9)).stop == "budget_exceeded"


def test_iteration_limit_stops_when_executed_reaches_max():
    assert gate_decide(replace(BASE, iterations=9, max_iterations=10)).admitted
    assert gate_decide(replace(BASE, iterations=10, max_iterations=10)).stop == "iteration_limit"


@pytest.mark.parametrize("budget_usd,estimate_usd", [(None, D("5")), (D("0.5"), None)])
def test_no_budget_or_no_price_projects_nothing(budget_usd, estimate_usd):
    decision = gate_decide(replace(BASE, budget_usd=budget_usd, estimate_usd=estimate_usd))
    assert decision.admitted and not decision.over_budget


def test_audit_reports_once_then_again_each_time_the_projection_grows_by_a_full_budget():
    audit = replace(BASE, budget_mode="audit", spent_usd=D("0.30"), estimate_usd=D("0.30"))
    first = gate_decide(audit)
    assert first.admitted and first.emit_audit_event
    assert first.audit_rearm_at_usd == D("1.10")  # projected 0.60 + budget 0.50

    after_first = replace(audit, audit_rearm_at_usd=first.audit_rearm_at_usd)
    assert not gate_decide(replace(after_first, spent_usd=D("0.60"))).emit_audit_event  # 0.90
    assert not gate_decide(replace(after_first, spent_usd=D("0.80"))).emit_audit_event  # 1.10: not past it

    second = gate_decide(replace(after_first, spent_usd=D("0.90")))  # 1.20
    assert second.emit_audit_event
    assert second.audit_rearm_at_usd == D("1.70")


def test_audit_does_not_report_under_a_raised_budget_even_past_the_old_rearm_point():
    raised = replace(BASE, budget_mode="audit", budget_usd=D("5"), spent_usd=D("1.2"), audit_rearm_at_usd=D("1.0"))
    assert not gate_decide(raised).emit_audit_event
