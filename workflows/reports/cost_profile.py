"""What a workflow's runs cost: the spread of completed runs, the cost of each agent's steps, the
audit runs an enforce budget would have stopped, and a budget recommended from them.

Estimates awaiting usage are left out (selectors.ON_OPEN_ESTIMATE: an attempt whose outcome is
unknown, charged its worst case, and the adjustments made to it). They are what a crash or a lost
call might have cost, not what the workflow costs, and the worst case would inflate the recommendation.
A run with one counts at its settled spend; an estimate that its correction brought to the usage
counts, as the two sum to what the attempt really cost. Runs are not left out whole: a call that timed
out is never corrected, so a workflow whose provider sometimes times out would otherwise have no
profile.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from django.db.models import Count, DecimalField, ExpressionWrapper, F, Min, Q, Sum

from workflows.definition import MONEY_PLACES
from workflows.definition.bounds import MAX_SUM_DIGITS
from workflows.models import BudgetMode, BudgetScope, Event, EventType, LedgerEntry, Run, RunStatus, Workflow
from workflows.selectors import ON_OPEN_ESTIMATE, runs_estimated_usd

MARGIN = Decimal("1.25")
RULE = f"p95 of completed runs x {MARGIN}, rounded up to the cent"
PERCENTILE_METHOD = "nearest rank: the smallest completed-run spend that at least p% of completed runs do not exceed"
CENT = Decimal("0.01")
AMOUNT = DecimalField(max_digits=MAX_SUM_DIGITS, decimal_places=6)

COMPLETED = Q(status=RunStatus.COMPLETED)
# A report about the run's own budget, not the team's period budget. Payloads without a scope were
# recorded before team budgets existed, so they are the run's.
RUN_BUDGET_REPORT = Q(payload__scope=BudgetScope.RUN) | ~Q(payload__has_key="scope")


@dataclass(frozen=True)
class WouldHaveStopped:
    """An audit run's first `budget_exceeded` report: where enforce mode would have stopped it."""

    run: int
    step_agent: str
    spent_usd: Decimal
    projected_usd: Decimal
    budget_usd: Decimal


@dataclass(frozen=True)
class CostProfile:
    runs: int
    completed_runs: int
    p50: Decimal | None
    p95: Decimal | None
    max: Decimal | None
    mean_cost_by_agent: dict[str, Decimal | None]
    would_have_stopped: list[WouldHaveStopped]
    recommended_budget_usd: Decimal | None
    note: str | None
    margin: Decimal = MARGIN
    rule: str = RULE
    percentile_method: str = PERCENTILE_METHOD


def cost_profile(*, workflow: Workflow) -> CostProfile:
    """The profile of every run of every version of `workflow`."""
    runs = Run.objects.filter(workflow_version__workflow=workflow)
    counts = runs.aggregate(
        runs=Count("pk"), completed_with_unpriced=Count("pk", filter=COMPLETED & Q(unpriced_steps__gt=0))
    )
    completed = runs.filter(COMPLETED).annotate(estimated=runs_estimated_usd())
    settled = completed.annotate(settled=ExpressionWrapper(F("spent_usd") - F("estimated"), output_field=AMOUNT))
    spends, with_estimates = [], 0
    for spent, estimated in settled.order_by("settled").values_list("settled", "estimated"):
        spends.append(spent)
        with_estimates += bool(estimated)
    p95 = nearest_rank(spends, percent=95) if spends else None
    return CostProfile(
        runs=counts["runs"],
        completed_runs=len(spends),
        p50=nearest_rank(spends, percent=50) if spends else None,
        p95=p95,
        max=spends[-1] if spends else None,
        mean_cost_by_agent=_mean_cost_by_agent(workflow=workflow),
        would_have_stopped=_would_have_stopped(workflow=workflow),
        # A budget must be positive: a p95 of $0 recommends none.
        recommended_budget_usd=recommended_budget(p95=p95) if p95 else None,
        note=_note(
            completed=len(spends),
            completed_with_unpriced=counts["completed_with_unpriced"],
            completed_with_estimates=with_estimates,
            p95=p95,
        ),
    )


def nearest_rank(ordered: Sequence[Decimal], *, percent: int) -> Decimal:
    """The value at rank ceil(percent/100 x n) of `ordered` (ascending, not empty; 0 < percent <= 100).

    Nearest rank never interpolates, so the answer is always the spend of a real run."""
    rank = math.ceil(percent * len(ordered) / 100)
    return ordered[rank - 1]


def recommended_budget(*, p95: Decimal) -> Decimal:
    return (p95 * MARGIN).quantize(CENT, rounding=ROUND_CEILING)


def _mean_cost_by_agent(*, workflow: Workflow) -> dict[str, Decimal | None]:
    """Each agent's mean cost per priced step (its attempts summed, estimates awaiting usage left out); None
    when none of its steps has a price."""
    rows = (
        LedgerEntry.objects.filter(~ON_OPEN_ESTIMATE, run__workflow_version__workflow=workflow)
        .values("agent")
        .annotate(cost=Sum("cost_usd"), priced_steps=Count("step", distinct=True, filter=Q(cost_usd__isnull=False)))
        .order_by("agent")
    )
    return {
        row["agent"]: (row["cost"] / row["priced_steps"]).quantize(MONEY_PLACES, ROUND_HALF_UP)
        if row["priced_steps"]
        else None
        for row in rows
    }


def _would_have_stopped(*, workflow: Workflow) -> list[WouldHaveStopped]:
    """The first audit-mode report of each run's own budget, oldest run first."""
    audit_reports = Event.objects.filter(
        RUN_BUDGET_REPORT,
        run__workflow_version__workflow=workflow,
        type=EventType.BUDGET_EXCEEDED,
        payload__budget_mode=BudgetMode.AUDIT,
    )
    first_per_run = audit_reports.values("run").annotate(first=Min("id")).values("first")
    return [
        WouldHaveStopped(
            run=event.run_id,
            step_agent=event.payload["current_agent"],
            spent_usd=Decimal(event.payload["spent_usd"]),
            projected_usd=Decimal(event.payload["projected_usd"]),
            budget_usd=Decimal(event.payload["budget_usd"]),
        )
        for event in Event.objects.filter(pk__in=first_per_run).order_by("run_id")
    ]


def _note(*, completed: int, completed_with_unpriced: int, completed_with_estimates: int, p95: Decimal | None) -> str | None:
    if not completed:
        return "No completed runs yet: the percentiles and the recommended budget need at least one."
    notes = []
    if completed_with_unpriced:
        notes.append(
            f"{completed_with_unpriced} of {completed} completed runs had unpriced steps: their spend leaves "
            "those steps out, so the percentiles and the recommendation understate them."
        )
    if completed_with_estimates:
        notes.append(
            f"{completed_with_estimates} of {completed} completed runs had attempts whose usage has not arrived: "
            "their estimated cost is left out, so the percentiles and the recommendation understate them."
        )
    if not p95:
        notes.append("Completed runs cost $0 at p95: there is no positive budget to recommend.")
    return " ".join(notes) or None
