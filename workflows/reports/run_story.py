"""A run told as its admin page tells it: the budget, the steps in order with what each cost, the spend
as it grew against the budget (with where a budget was reported exceeded and where a run was stopped),
the events and the ledger. Every amount is summed from the ledger rows themselves, so the page adds up
as the ledger does.
"""

from bisect import bisect_right
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from workflows.models import BudgetMode, Event, EventType, LedgerEntry, Run, Step

# The most rows of each table the page lists (the latest ones); the chart and the sums read them all.
SHOWN_ROWS = 500
PERCENT = Decimal("0.1")


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
    input_tokens: int  # uncached, cached and cache-written input together
    output_tokens: int
    duration: timedelta | None


@dataclass(frozen=True)
class SpendPoint:
    """The run's spend after one more ledger entry, in the order they were written."""

    entry_id: int
    agent: str
    cost_usd: Decimal | None
    spent_usd: Decimal


@dataclass(frozen=True)
class BudgetMark:
    """A `budget_exceeded` event, placed after the ledger entries written before it: an audit report,
    or (`stopped`) where an enforce budget stopped the run before `agent`."""

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
    steps: list[StepLine]
    spend: list[SpendPoint]
    # The run's budget from each point on: (after how many ledger entries, budget); a resume may change it.
    budgets: list[tuple[int, Decimal | None]]
    marks: list[BudgetMark]
    events: list[Event]
    events_total: int
    ledger: list[LedgerEntry]
    ledger_total_usd: Decimal


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
    entries = list(run.ledger_entries.select_related("step").order_by("created_at", "id"))
    written_at = [entry.created_at for entry in entries]

    spend, spent = [], Decimal("0")
    for entry in entries:
        spent += entry.cost_usd or 0
        spend.append(SpendPoint(entry_id=entry.pk, agent=entry.agent, cost_usd=entry.cost_usd, spent_usd=spent))

    budget_events = run.events.filter(type__in=[EventType.BUDGET_EXCEEDED, EventType.RUN_RESUMED]).order_by("id")
    marks, budgets = [], []
    for event in budget_events:
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
                    scope=payload.get("scope", "run"),
                    agent=payload.get("current_agent", ""),
                    budget_usd=Decimal(payload["budget_usd"]),
                    spent_usd=Decimal(payload["spent_usd"]),
                    projected_usd=Decimal(payload["projected_usd"]),
                )
            )
    if not budgets:
        budgets.append((0, run.budget_usd))

    by_step: dict[int, list[LedgerEntry]] = {}
    for entry in entries:
        by_step.setdefault(entry.step_id, []).append(entry)
    steps = [_step_line(step, by_step.get(step.pk, [])) for step in run.steps.order_by("sequence")[:SHOWN_ROWS]]

    events = run.events.order_by("-id")[:SHOWN_ROWS]
    return RunStory(
        summary=budget_summary(run),
        steps=steps,
        spend=spend,
        budgets=budgets,
        marks=marks,
        events=list(reversed(events)),
        events_total=run.events.count(),
        ledger=entries[-SHOWN_ROWS:],
        ledger_total_usd=spent,
    )


def _step_line(step: Step, entries: list[LedgerEntry]) -> StepLine:
    return StepLine(
        step=step,
        cost_usd=sum((entry.cost_usd for entry in entries if entry.cost_usd is not None), Decimal("0")),
        unpriced_entries=sum(entry.cost_usd is None for entry in entries),
        input_tokens=sum(entry.input_tokens + entry.cached_input_tokens + entry.cache_write_tokens for entry in entries),
        output_tokens=sum(entry.output_tokens for entry in entries),
        duration=step.finished_at - step.started_at if step.started_at and step.finished_at else None,
    )


def _money(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
