"""The budget gate's decision: a pure function of a run's limits and counters, run before every step.

A step is checked against every budget that covers it (the run's, and its team's period budget)
and runs only if all of them admit it. `step_begin` applies the decision under row locks;
`run_resume` asks it whether a resumed run could move at all.
"""

from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal

from workflows.models import BudgetMode, RunStatus


@dataclass(frozen=True)
class BudgetState:
    scope: str  # "run" or "team"
    subject: str  # how messages name it: "the run", "team 'acme' this month"
    budget_usd: Decimal | None
    mode: str
    spent_usd: Decimal
    reserved_usd: Decimal
    # Audit mode reports again only once a projection passes this; None reports at once.
    audit_rearm_at_usd: Decimal | None = None


@dataclass(frozen=True)
class BudgetCheck:
    """A budget the step's projection goes over."""

    scope: str
    subject: str
    budget_usd: Decimal
    mode: str
    spent_usd: Decimal
    projected_usd: Decimal
    report: bool  # emit `budget_exceeded` now
    audit_rearm_at_usd: Decimal | None = None


@dataclass(frozen=True)
class GateInput:
    max_iterations: int
    timeout_seconds: int | None
    iterations: int
    elapsed: timedelta
    # None when the step's model has no price: nothing can be projected.
    estimate_usd: Decimal | None
    budgets: tuple[BudgetState, ...]
    # Whether the step counts toward max_iterations: a validator's call and a re-run are part of
    # their agent's execution, admitted as one iteration (definition/validation.py).
    counted: bool = True


@dataclass(frozen=True)
class GateDecision:
    stop: str | None = None  # the run status to stop with; None admits the step
    message: str = ""
    over_budget: tuple[BudgetCheck, ...] = ()
    stopped_by: BudgetCheck | None = None

    @property
    def admitted(self) -> bool:
        return self.stop is None

    @property
    def reports(self) -> tuple[BudgetCheck, ...]:
        return tuple(check for check in self.over_budget if check.report)


def gate_decide(state: GateInput) -> GateDecision:
    if state.timeout_seconds is not None and state.elapsed.total_seconds() > state.timeout_seconds:
        return GateDecision(
            stop=RunStatus.TIMED_OUT,
            message=f"The run has been active for {state.elapsed.total_seconds():.1f}s; "
            f"its timeout is {state.timeout_seconds}s.",
        )
    if state.counted and state.iterations >= state.max_iterations:
        return GateDecision(
            stop=RunStatus.ITERATION_LIMIT,
            message=f"The run has executed {state.iterations} steps; max_iterations is {state.max_iterations}.",
        )
    if state.estimate_usd is None:
        return GateDecision()
    over = tuple(
        check for budget in state.budgets if (check := _check_budget(budget, state.estimate_usd)) is not None
    )
    enforced = next((check for check in over if check.mode == BudgetMode.ENFORCE), None)
    if enforced is not None:
        return GateDecision(
            stop=RunStatus.BUDGET_EXCEEDED,
            message=f"The next step would bring {enforced.subject} to ${enforced.projected_usd}, "
            f"over its budget of ${enforced.budget_usd}.",
            over_budget=(enforced,),
            stopped_by=enforced,
        )
    return GateDecision(over_budget=over)


def _check_budget(budget: BudgetState, estimate: Decimal) -> BudgetCheck | None:
    if budget.budget_usd is None:
        return None
    projected = budget.spent_usd + budget.reserved_usd + estimate
    if projected <= budget.budget_usd:
        return None
    check = BudgetCheck(
        scope=budget.scope,
        subject=budget.subject,
        budget_usd=budget.budget_usd,
        mode=budget.mode,
        spent_usd=budget.spent_usd,
        projected_usd=projected,
        report=True,
    )
    if budget.mode == BudgetMode.ENFORCE:
        return check
    # Audit: report once, then again each time the projection grows by another full budget.
    if budget.audit_rearm_at_usd is not None and projected <= budget.audit_rearm_at_usd:
        return replace(check, report=False)
    return replace(check, audit_rearm_at_usd=projected + budget.budget_usd)
