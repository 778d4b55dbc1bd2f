"""The budget gate's decision: a pure function of a run's limits and counters, run before every step.

`step_begin` applies it under the run's row lock; `run_resume` asks it whether a resumed run could move.
"""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from workflows.models import BudgetMode, RunStatus


@dataclass(frozen=True)
class GateInput:
    budget_usd: Decimal | None
    budget_mode: str
    max_iterations: int
    timeout_seconds: int | None
    spent_usd: Decimal
    reserved_usd: Decimal
    iterations: int
    elapsed: timedelta
    audit_rearm_at_usd: Decimal | None
    # None when the step's model has no price: nothing can be projected.
    estimate_usd: Decimal | None


@dataclass(frozen=True)
class GateDecision:
    stop: str | None = None  # the run status to stop with; None admits the step
    message: str = ""
    projected_usd: Decimal | None = None
    over_budget: bool = False
    # Audit mode: emit `budget_exceeded` now, and again only once the projection passes this.
    emit_audit_event: bool = False
    audit_rearm_at_usd: Decimal | None = None

    @property
    def admitted(self) -> bool:
        return self.stop is None


def gate_decide(state: GateInput) -> GateDecision:
    if state.timeout_seconds is not None and state.elapsed.total_seconds() > state.timeout_seconds:
        return GateDecision(
            stop=RunStatus.TIMED_OUT,
            message=f"The run has been active for {state.elapsed.total_seconds():.1f}s; "
            f"its timeout is {state.timeout_seconds}s.",
        )
    if state.iterations >= state.max_iterations:
        return GateDecision(
            stop=RunStatus.ITERATION_LIMIT,
            message=f"The run has executed {state.iterations} steps; max_iterations is {state.max_iterations}.",
        )
    if state.budget_usd is None or state.estimate_usd is None:
        return GateDecision()
    projected = state.spent_usd + state.reserved_usd + state.estimate_usd
    if projected <= state.budget_usd:
        return GateDecision(projected_usd=projected)
    if state.budget_mode == BudgetMode.ENFORCE:
        return GateDecision(
            stop=RunStatus.BUDGET_EXCEEDED,
            message=f"The next step would bring the run to ${projected}, over its budget of ${state.budget_usd}.",
            projected_usd=projected,
            over_budget=True,
        )
    # Audit: report once, then again each time the projection grows by another full budget.
    if state.audit_rearm_at_usd is not None and projected <= state.audit_rearm_at_usd:
        return GateDecision(projected_usd=projected, over_budget=True)
    return GateDecision(
        projected_usd=projected,
        over_budget=True,
        emit_audit_event=True,
        audit_rearm_at_usd=projected + state.budget_usd,
    )
