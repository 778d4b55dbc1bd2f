"""DESIGN.md's invariants, checked after every scenario."""

from collections import Counter, defaultdict
from datetime import UTC
from decimal import Decimal

from django.db.models import F, Sum

from workflows.models import LedgerEntry, Run, Step, StepStatus, Team, TeamDailySpend
from workflows.services.escrow import team_figures
from workflows.services.periods import period_window


def assert_invariants(*runs: Run) -> None:
    for run in runs:
        run.refresh_from_db()
        ledger_sum = LedgerEntry.objects.filter(run=run).aggregate(total=Sum("cost_usd"))["total"] or Decimal("0")
        assert ledger_sum == run.spent_usd, f"run {run.pk}: ledger {ledger_sum} != spent {run.spent_usd}"
        assert run.reserved_usd >= 0
        held = Step.objects.filter(run=run).aggregate(total=Sum("reserved_usd"))["total"] or Decimal("0")
        assert held == run.reserved_usd, f"run {run.pk}: steps hold {held}, run reserves {run.reserved_usd}"
        if not Step.objects.filter(run=run, status=StepStatus.RUNNING).exists():
            assert run.reserved_usd == 0, f"run {run.pk} reserves {run.reserved_usd} with nothing in flight"
        attempts = Counter(LedgerEntry.objects.filter(run=run).values_list("step_id", "attempt"))
        assert all(count == 1 for count in attempts.values())
        # Several steps are in flight only as branches of one entry of one group.
        open_steps = Step.objects.filter(run=run, status__in=[StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING])
        groups = set(open_steps.values_list("group", "iteration"))
        assert open_steps.count() <= 1 or (len(groups) == 1 and "" not in {group for group, _ in groups}), (
            f"run {run.pk} has unrelated steps open: {list(open_steps.values_list('sequence', 'agent', 'group'))}"
        )
    for team in Team.objects.filter(runs__in=runs).distinct():
        ledger = LedgerEntry.objects.filter(team=team).aggregate(total=Sum("cost_usd"))["total"] or Decimal("0")
        spent = Run.objects.filter(team=team).aggregate(total=Sum("spent_usd"))["total"] or Decimal("0")
        assert ledger == spent, f"team {team}: ledger {ledger} != spent {spent}"
        assert_team_holds(team)
        assert_daily_spend_matches_ledger(team)


def assert_team_holds(team: Team) -> None:
    """docs/architecture.md's escrow invariants: a run that has stopped holds no slice of its team's
    budget, and, when no step cost more than its estimate, a team that enforces a period budget and
    whose runs hold slices has room for them: its period spend plus its runs' holds stay within its
    budget. The figures are read in one statement, as the gate reads them."""
    team.refresh_from_db()
    runs = Run.objects.filter(team=team)
    idle = runs.exclude(status__in=["queued", "running"]).filter(held_usd__gt=F("reserved_usd"))
    assert not idle.exists(), f"team {team}: stopped runs hold slices: {list(idle.values_list('pk', 'held_usd'))}"
    if not team.enforces_period_budget:
        return  # what runs hold then counts for nothing, and a budget set later recalls it first
    figures = team_figures(team, period_window(team.period))
    overage = sum(
        (max(cost - estimate, Decimal("0")) for cost, estimate in LedgerEntry.objects.filter(
            team=team, cost_usd__isnull=False, step__estimate_usd__isnull=False
        ).values_list("cost_usd", "step__estimate_usd")),
        Decimal("0"),
    )
    # Steps in flight when the budget was lowered may leave the team over it: slices never do.
    if not overage and figures.held_usd > figures.reserved_usd:
        assert figures.spent_usd + figures.held_usd <= team.period_budget_usd, (
            f"team {team}: spent {figures.spent_usd} + held {figures.held_usd} > budget {team.period_budget_usd}"
        )


def assert_daily_spend_matches_ledger(team: Team) -> None:
    """The daily sums the gate reads period spend from are the ledger's own, day by UTC day."""
    ledger: dict = defaultdict(Decimal)
    for created_at, cost in LedgerEntry.objects.filter(team=team).values_list("created_at", "cost_usd"):
        ledger[created_at.astimezone(UTC).date()] += cost or Decimal("0")
    daily = dict(TeamDailySpend.objects.filter(team=team).values_list("day", "spent_usd"))
    assert daily == dict(ledger), f"team {team}: daily sums {daily} != ledger {dict(ledger)}"
