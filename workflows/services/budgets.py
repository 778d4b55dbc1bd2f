"""The budgets a step is held to (its run's, and its team's period budget), their reservations,
and the `budget_exceeded` reports. Callers hold the run and step row locks (`locks.lock_rows`), and
the team's too to report against the team's budget."""

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import DecimalField, F, Model
from django.db.models.functions import Round
from django.utils import timezone

from workflows.models import BudgetScope, EventType, Run, Step, Team
from workflows.services.alerts import alert_send
from workflows.services.events import event_record, usd
from workflows.services.gate import BudgetCheck, BudgetState, GateDecision, GateInput
from workflows.services.escrow import held_after, team_figures
from workflows.services.periods import PeriodWindow, period_window


def add(instance: Model, *, assign: dict | None = None, **deltas) -> None:
    """Add to a row's counters, in the database and on `instance`; `assign` sets other fields of
    the row in the same UPDATE (an `auto_now` field is not stamped: assign it).

    The caller holds the row's lock and read `instance` under it (every caller locks the rows whose
    money it moves), so no one else can have changed the counters since: the value it holds plus
    the delta is exactly what the database now holds, with no read-back.
    """
    assign = assign or {}
    type(instance).objects.filter(pk=instance.pk).update(
        **assign, **{field: _sum_expression(instance, field, delta) for field, delta in deltas.items()}
    )
    for field, value in assign.items():
        setattr(instance, field, value)
    for field, delta in deltas.items():
        total = getattr(instance, field) + delta
        column = instance._meta.get_field(field)
        if isinstance(column, DecimalField):
            # As the database stores it: rounded to the column's places, halves away from zero.
            total = total.quantize(Decimal(1).scaleb(-column.decimal_places), ROUND_HALF_UP)
        setattr(instance, field, total)


def _sum_expression(instance: Model, field: str, delta):
    total = F(field) + delta
    column = instance._meta.get_field(field)
    if isinstance(column, DecimalField):
        # SQLite adds decimals as binary floats: unrounded, a reservation taken and released can
        # leave -3e-18 behind, which the reserved >= 0 check then refuses. Exact on PostgreSQL.
        return Round(total, column.decimal_places, output_field=column)
    return total


def run_budget_state(run: Run) -> BudgetState:
    return BudgetState(
        scope=BudgetScope.RUN,
        subject="the run",
        budget_usd=run.budget_usd,
        mode=run.budget_mode,
        spent_usd=run.spent_usd,
        reserved_usd=run.reserved_usd,
        audit_rearm_at_usd=run.audit_rearm_at_usd,
    )


def team_budget_state(team: Team, window: PeriodWindow, *, spent: Decimal, reserved: Decimal) -> BudgetState:
    return BudgetState(
        scope=BudgetScope.TEAM,
        subject=f"team '{team.name}' this {team.period}",
        budget_usd=team.period_budget_usd,
        mode=team.period_mode,
        spent_usd=spent,
        reserved_usd=reserved,
        # Audit reporting starts afresh each period.
        audit_rearm_at_usd=team.period_audit_rearm_at_usd if team.period_audit_start == window.start else None,
    )


def team_in_flight_state(team: Team, window: PeriodWindow) -> BudgetState:
    """The team's period budget against its spend and its steps in flight: what the gate decides by."""
    if team.period_budget_usd is None:
        return team_budget_state(team, window, spent=Decimal("0"), reserved=Decimal("0"))
    figures = team_figures(team, window)
    return team_budget_state(team, window, spent=figures.spent_usd, reserved=figures.reserved_usd)


def gate_input(
    *,
    run: Run,
    team: Team,
    estimate: Decimal | None,
    now=None,
    in_flight: int = 0,
    team_budget: BudgetState | None = None,
    counted: bool = True,
) -> GateInput:
    """`in_flight` counts the run's other steps running now: each will count as executed, so the
    iteration limit holds with several branches of a group running at once. `team_budget` defaults
    to the team's state over its steps in flight (`team_in_flight_state`). `counted`: whether the
    step counts toward max_iterations."""
    now = now or timezone.now()
    if team_budget is None:
        team_budget = team_in_flight_state(team, period_window(team.period, now))
    return GateInput(
        max_iterations=run.max_iterations,
        timeout_seconds=run.timeout_seconds,
        iterations=run.iterations + in_flight,
        elapsed=run.elapsed(now),
        estimate_usd=estimate,
        budgets=(run_budget_state(run), team_budget),
        counted=counted,
    )


def reserve(*, run: Run, step: Step, amount: Decimal, run_fields: dict | None = None) -> None:
    """Hold the step's estimate against its budgets while it runs; `run_fields` are set on the run
    in the same UPDATE."""
    add(run, reserved_usd=amount, assign=run_fields)
    step.reserved_usd = amount


def release(*, run: Run, step: Step) -> None:
    if not step.reserved_usd:
        return
    add(run, assign={"held_usd": held_after(run, released=step.reserved_usd)}, reserved_usd=-step.reserved_usd)
    step.reserved_usd = Decimal("0")
    step.save(update_fields=["reserved_usd"])


def budget_exceeded_payload(check: BudgetCheck, *, current_agent: str) -> dict:
    return {
        "scope": check.scope,
        "budget_usd": usd(check.budget_usd),
        "spent_usd": usd(check.spent_usd),
        "projected_usd": usd(check.projected_usd),
        "budget_mode": check.mode,
        "current_agent": current_agent,
    }


def report_over_budget(*, team: Team, run: Run, step: Step, decision: GateDecision, now: datetime) -> None:
    """Record the audit-mode `budget_exceeded` events an admitted step is due, and re-arm them."""
    for check in decision.reports:
        event = event_record(
            run=run, type=EventType.BUDGET_EXCEEDED, payload=budget_exceeded_payload(check, current_agent=step.agent)
        )
        alert_send(team=team, event=event)
        if check.scope == BudgetScope.RUN:
            run.audit_rearm_at_usd = check.audit_rearm_at_usd
            run.save(update_fields=["audit_rearm_at_usd"])
        else:
            team.period_audit_start = period_window(team.period, now).start
            team.period_audit_rearm_at_usd = check.audit_rearm_at_usd
            team.save(update_fields=["period_audit_start", "period_audit_rearm_at_usd"])
