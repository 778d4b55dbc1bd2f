"""A run told as its admin page tells it: the budget, the steps in order with what each cost, the spend
as it grew against the budget (with where a budget was reported exceeded and where a run was stopped),
the events and the ledger. Every amount is summed from the ledger rows themselves, so the page adds up
as the ledger does.
"""

from bisect import bisect_right
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Count, F, Q, Sum

from workflows.models import BudgetMode, BudgetScope, Checkpoint, Event, EventType, LedgerEntry, Run, Step

# The most rows of each table the page lists (the latest ones); the sums read them all, in SQL.
SHOWN_ROWS = 500
# The most points the chart draws: a long run's spend is drawn from every n-th entry, and its last.
CHART_POINTS = 500
SHOWN_CHECKPOINTS = 5
PERCENT = Decimal("0.1")
MICRO_USD = Decimal("0.000001")


@dataclass(frozen=True)
class BudgetSummary:
    budget_usd: Decimal | None
    budget_mode: str
    spent_usd: Decimal
    reserved_usd: Decimal
    remaining_usd: Decimal | None  # budget - spent - reserved: negative once overshot
    percent_spent: Decimal | None


@dataclass(frozen=True)
class StepLine:
    step: Step
    cost_usd: Decimal  # the priced part: its ledger entries, corrections and adjustments included
    unpriced_entries: int
    input_tokens: int  # all of it: uncached, read from the cache and written to it
    output_tokens: int
    duration: timedelta | None


@dataclass(frozen=True)
class SpendPoint:
    """The run's spend after its first `entries` ledger entries, in the order they were written; the
    last of them is `entry_id`."""

    entries: int
    entry_id: int
    agent: str
    cost_usd: Decimal | None
    spent_usd: Decimal


@dataclass(frozen=True)
class BudgetMark:
    """A `budget_exceeded` event, placed after the ledger entries written before it: an audit report,
    or (`stopped`) where an enforce budget stopped the run before `agent`. A team budget's figures are
    the team's period spend, not the run's."""

    after_entries: int
    stopped: bool
    scope: str
    agent: str
    budget_usd: Decimal
    spent_usd: Decimal
    projected_usd: Decimal


@dataclass(frozen=True)
class RunStory:
    summary: BudgetSummary
    steps: list[StepLine]  # the latest SHOWN_ROWS
    steps_total: int
    entries_total: int
    spend: list[SpendPoint]  # at most CHART_POINTS, the last one the run's whole spend
    # The run's budget from each point on: (after how many ledger entries, budget); a resume may change it.
    budgets: list[tuple[int, Decimal | None]]
    marks: list[BudgetMark]
    events: list[Event]
    events_total: int
    ledger: list[LedgerEntry]  # the latest SHOWN_ROWS
    ledger_total_usd: Decimal  # every entry's
    checkpoints: list[Checkpoint]  # the latest SHOWN_CHECKPOINTS
    checkpoints_total: int


def budget_summary(run: Run) -> BudgetSummary:
    remaining = percent = None
    if run.budget_usd is not None:
        remaining = run.budget_usd - run.spent_usd - run.reserved_usd
        percent = (run.spent_usd * 100 / run.budget_usd).quantize(PERCENT, rounding=ROUND_HALF_UP)
    return BudgetSummary(
        budget_usd=run.budget_usd,
        budget_mode=run.budget_mode,
        spent_usd=run.spent_usd,
        reserved_usd=run.reserved_usd,
        remaining_usd=remaining,
        percent_spent=percent,
    )


def run_story(*, run: Run) -> RunStory:
    # In the order written: ids, as a run's entries are written one after another.
    costs = list(run.ledger_entries.order_by("id").values_list("id", "agent", "cost_usd", "created_at"))
    spend, spent = [], Decimal("0")
    every = -(-len(costs) // CHART_POINTS)
    for n, (entry_id, agent, cost, _) in enumerate(costs, start=1):
        spent += cost or 0
        if n % every == 0 or n == len(costs):
            spend.append(SpendPoint(entries=n, entry_id=entry_id, agent=agent, cost_usd=cost, spent_usd=spent))

    marks, budgets = _marks_and_budgets(run, sorted(written_at for *_, written_at in costs))
    if not budgets:
        budgets.append((0, run.budget_usd))

    shown_steps = list(reversed(run.steps.order_by("-sequence")[:SHOWN_ROWS]))
    sums = {
        row["step_id"]: row
        for row in LedgerEntry.objects.filter(step__in=[step.pk for step in shown_steps])
        .values("step_id")
        .annotate(
            cost=Sum("cost_usd"),
            unpriced=Count("id", filter=Q(cost_usd__isnull=True)),
            tokens_in=Sum(F("input_tokens") + F("cached_input_tokens") + F("cache_write_tokens")),
            tokens_out=Sum("output_tokens"),
        )
    }

    return RunStory(
        summary=budget_summary(run),
        steps=[_step_line(step, sums.get(step.pk)) for step in shown_steps],
        steps_total=run.steps.count(),
        entries_total=len(costs),
        spend=spend,
        budgets=budgets,
        marks=marks,
        events=list(reversed(run.events.order_by("-id")[:SHOWN_ROWS])),
        events_total=run.events.count(),
        ledger=list(reversed(run.ledger_entries.select_related("step").order_by("-id")[:SHOWN_ROWS])),
        ledger_total_usd=spent,
        checkpoints=list(reversed(run.checkpoints.order_by("-id")[:SHOWN_CHECKPOINTS])),
        checkpoints_total=run.checkpoints.count(),
    )


def _marks_and_budgets(run: Run, written_at: list) -> tuple[list[BudgetMark], list[tuple[int, Decimal | None]]]:
    """Each `budget_exceeded` event, and each budget a resume set, placed after the ledger entries
    written before it (`written_at`: their times, in order): events and entries are rows of two tables,
    so their times are what orders them."""
    marks, budgets = [], []
    for event in run.events.filter(type__in=[EventType.BUDGET_EXCEEDED, EventType.RUN_RESUMED]).order_by("id"):
        after = bisect_right(written_at, event.created_at)
        payload = event.payload
        if event.type == EventType.RUN_RESUMED:
            if not budgets:
                budgets.append((0, _money(payload["old_limits"]["budget_usd"])))
            budgets.append((after, _money(payload["new_limits"]["budget_usd"])))
        else:
            marks.append(
                BudgetMark(
                    after_entries=after,
                    stopped=payload.get("budget_mode") == BudgetMode.ENFORCE,
                    scope=payload.get("scope", BudgetScope.RUN),
                    agent=payload.get("current_agent", ""),
                    budget_usd=Decimal(payload["budget_usd"]),
                    spent_usd=Decimal(payload["spent_usd"]),
                    projected_usd=Decimal(payload["projected_usd"]),
                )
            )
    return marks, budgets


def _step_line(step: Step, sums: dict | None) -> StepLine:
    sums = sums or {}
    return StepLine(
        step=step,
        cost_usd=(sums.get("cost") or Decimal("0")).quantize(MICRO_USD),  # SQLite sums in floating point
        unpriced_entries=sums.get("unpriced", 0),
        input_tokens=sums.get("tokens_in") or 0,
        output_tokens=sums.get("tokens_out") or 0,
        duration=step.finished_at - step.started_at if step.started_at and step.finished_at else None,
    )


def _money(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
